"""Configuration of where the data come from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ragrec._settings import Settings

__all__ = ["DataConfig"]


class DataConfig(Settings):
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
