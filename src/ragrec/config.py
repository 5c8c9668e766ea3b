"""The resolved configuration of a ragrec run: pydantic models, loadable from TOML.

Every model forbids unknown keys, so a typo is an error naming the key, never a
silently ignored setting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragrec.errors import ConfigError, describe_validation_error

__all__ = ["DataConfig", "EvalConfig", "RagrecConfig", "load_config", "to_toml"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Config):
    """Where the data comes from and how invalid rows are treated."""

    path: str = Field(
        default="movielens-small",
        description="A dataset name (movielens-small: downloaded once and cached) or a "
        "MovieLens folder (ml-latest-small, ml-100k or ml-1m layout).",
    )
    on_invalid: Literal["error", "drop"] = Field(
        default="error",
        description="'error' stops at invalid rows; 'drop' skips them (counted, logged).",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder for downloaded datasets; None means ~/.cache/ragrec/datasets.",
    )


class EvalConfig(_Config):
    """An offline evaluation run."""

    protocol: Literal["llamarec", "llmrank-c20", "temporal", "custom"] = Field(
        default="llamarec",
        description="Evaluation protocol: llamarec (leave-one-out, every item ranked; see "
        "ARCHITECTURE: LlamaRec), llmrank-c20 (target + 19 sampled negatives; report "
        "ndcg@1/5/10/20), temporal (global time cutoffs), custom (splits from files).",
    )
    protocol_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the chosen protocol, checked when the data are prepared "
        "(unknown keys are errors): llamarec: k (5); llmrank-c20: k (5), negatives (19), "
        "seed (0); temporal: validation_quantile (0.8), test_quantile (0.9); custom: "
        "train, validation, test (file paths, required).",
    )
    split: Literal["validation", "test"] = Field(default="test", description="Split scored.")
    ranker: str = Field(default="popularity", description="Ranker name: popularity, random.")
    ranker_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the chosen ranker, checked by that ranker's config model.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: [
            "recall@5",
            "recall@10",
            "recall@20",
            "mrr@5",
            "mrr@10",
            "ndcg@5",
            "ndcg@10",
        ],
        description="Metric names, e.g. ndcg@10, recall@20, mrr@10.",
    )
    seed: int = Field(default=0, description="Seed recorded with the run and given to rankers.")
    batch_size: int = Field(default=256, ge=1, description="Users scored per batch.")
    limit_users: int | None = Field(
        default=None, ge=1, description="Evaluate only the first N users (quick looks)."
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from ragrec.eval.metrics import parse_metrics

        try:
            return [m.name for m in parse_metrics(value)]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("ranker")
    @classmethod
    def _known_ranker(cls, value: str) -> str:
        return known_ranker(value)


def known_ranker(value: str) -> str:
    """``value`` if it names a registered ranker (``ragrec.eval.RANKERS``).

    Raises:
        ValueError: Unknown name (for pydantic validators), listing the allowed ones.
    """
    from ragrec.eval import RANKERS

    if value not in RANKERS:
        raise ValueError(f"ranker {value!r} is not known; allowed: {', '.join(sorted(RANKERS))}")
    return value


class RagrecConfig(_Config):
    """The whole configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def _describe(exc: ValidationError, source: str) -> str:
    hint = " (check its spelling; see `ragrec config show`)"
    return f"{source}: invalid configuration: " + describe_validation_error(exc, unknown_hint=hint)


def read_toml(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """A TOML file's tables and the name errors should cite (``({}, "configuration")``
    without a path).

    Raises:
        ConfigError: Missing, unreadable or not TOML.
    """
    if path is None:
        return {}, "configuration"
    file = Path(path)
    try:
        return tomllib.loads(file.read_text(encoding="utf-8")), file.name
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(file)!r} cannot be read as UTF-8 text ({exc}); pass a TOML file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file.name}: not valid TOML ({exc})") from exc


def load_config(path: str | Path | None = None, **overrides: Any) -> RagrecConfig:
    """Load a TOML configuration file, then apply section overrides.

    Args:
        path: A TOML file; None gives the defaults.
        **overrides: Per section, a dict of values that replace the file's
            (``eval={"split": "validation"}``); ``None`` values are ignored.

    Raises:
        ConfigError: Missing or malformed file, unknown keys, invalid values.
    """
    raw, source = read_toml(path)
    for section, values in overrides.items():
        kept = {k: v for k, v in (values or {}).items() if v is not None}
        if kept:
            current = raw.get(section, {})
            if not isinstance(current, dict):
                raise ConfigError(f"{source}: [{section}] must be a table")
            raw[section] = {**current, **kept}
    try:
        return RagrecConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc


def to_toml(config: RagrecConfig) -> str:
    """Render a configuration as TOML (``None`` values are left out)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))
