"""A grid of systems declared in TOML, evaluated side by side.

A systems file holds the usual ``[data]`` and ``[eval]`` tables (shared by every system),
then one ``[[systems]]`` entry per system::

    [[systems]]
    name = "ease"
    ranker = "ease"

    [[systems]]
    name = "llm"
    ranker = "llm"
    config = { n_candidates = 20 }
    # one system per combination; dotted keys reach into nested config tables
    grid = { "exemplars.k" = [0, 2] }

A top-level ``reference = "NAME"`` picks the system the others are compared with in the
report (default: the first). Optional ``[[published]]`` rows (``name``, ``source``,
``metrics = {"ndcg@10" = ...}``) are shown in the report next to the systems run here,
marked as published.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from ragrec._settings import Settings
from ragrec.config import read_toml
from ragrec.data import DataConfig
from ragrec.errors import ConfigError, describe_validation_error
from ragrec.eval._config import EvalConfig
from ragrec.eval._registry import known_ranker

__all__ = ["GridFile", "PublishedRow", "SystemRun", "SystemSpec", "expand_systems", "load_grid"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


class SystemSpec(Settings):
    """One ``[[systems]]`` entry."""

    name: str = Field(description="Display name; also the run's folder name.")
    ranker: str = Field(description="Ranker name (see `ragrec eval --help`).")
    config: dict[str, Any] = Field(default_factory=dict, description="The ranker's settings.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted config keys to lists of values: one system per combination.",
    )

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"name {value!r} must be usable as a folder name: letters, digits and . _ = , + -"
            )
        return value

    @field_validator("ranker")
    @classmethod
    def _known(cls, value: str) -> str:
        return known_ranker(value)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values; give a non-empty list")
        return value


class PublishedRow(Settings):
    """A published result shown beside the systems (not run here)."""

    name: str
    source: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)


class GridFile(Settings):
    """A whole systems file."""

    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    systems: list[SystemSpec] = Field(min_length=1)
    published: list[PublishedRow] = Field(default_factory=list)
    reference: str | None = Field(
        default=None,
        description="System the others are compared with in the report (paired tests); "
        "default: the first.",
    )


@dataclass(frozen=True)
class SystemRun:
    """One expanded system: its name, ranker and full config."""

    name: str
    ranker: str
    config: dict[str, Any]


def _set_dotted(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    out = dict(config)
    if not rest:
        out[head] = value
        return out
    inner = out.get(head, {})
    if not isinstance(inner, Mapping):
        raise ConfigError(f"grid key {key!r}: {head!r} is {inner!r}, not a table")
    out[head] = _set_dotted(dict(inner), rest, value)
    return out


def _label(value: Any) -> str:
    return str(value).replace(" ", "")


def expand_systems(systems: list[SystemSpec]) -> list[SystemRun]:
    """One :class:`SystemRun` per system and grid combination; names must be unique."""
    runs: list[SystemRun] = []
    for spec in systems:
        keys = list(spec.grid)
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            config = dict(spec.config)
            parts = []
            for key, value in zip(keys, values, strict=True):
                config = _set_dotted(config, key, value)
                parts.append(f"{key.rsplit('.', 1)[-1]}={_label(value)}")
            name = spec.name + (f"[{','.join(parts)}]" if parts else "")
            runs.append(SystemRun(name, spec.ranker, config))
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise ConfigError(f"system name {run.name!r} appears twice; give each a unique name")
        seen.add(run.name)
    return runs


def load_grid(path: str | Path) -> GridFile:
    """Read and validate a systems file.

    Raises:
        ConfigError: Missing file, bad TOML, unknown keys or rankers, empty grids.
    """
    raw, source = read_toml(path)
    try:
        grid = GridFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid systems file: {describe_validation_error(exc)}"
        ) from exc
    names = [run.name for run in expand_systems(grid.systems)]  # unique, dotted keys valid
    if grid.reference is not None and grid.reference not in names:
        raise ConfigError(
            f"{source}: reference={grid.reference!r} is not a system; "
            f"use one of: {', '.join(names)}"
        )
    return grid
