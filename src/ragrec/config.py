"""The resolved configuration of a ragrec run: pydantic models, loadable from TOML.

Each table's model lives with its package (``[data]``: :class:`ragrec.data.DataConfig`,
``[eval]``: :class:`ragrec.eval.EvalConfig`, ``[recommender]``:
:class:`ragrec.RecommenderConfig`) and is re-exported here. Every model forbids unknown
keys, so a typo is an error naming the key, never a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import Field, ValidationError

from ragrec._recommender_config import RecommenderConfig
from ragrec._settings import Settings
from ragrec.data import DataConfig
from ragrec.errors import ConfigError, describe_validation_error
from ragrec.eval import EvalConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "RagrecConfig",
    "RecommenderConfig",
    "load_config",
    "read_toml",
    "to_toml",
]


class RagrecConfig(Settings):
    """The whole configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    recommender: RecommenderConfig = Field(default_factory=RecommenderConfig)


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
