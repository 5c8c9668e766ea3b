"""The base of ragrec's configuration models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Settings"]


class Settings(BaseModel):
    """A closed, immutable configuration model: an unknown key is an error naming the
    key, never a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
