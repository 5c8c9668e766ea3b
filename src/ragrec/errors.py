"""Exception types shared by every ragrec package.

Every error that reaches a user names the offending field or parameter, the value
received, what is allowed, and how to fix it. The CLI prints ``str(error)`` on one
line and exits non-zero; library callers can catch :class:`RagrecError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ConfigError",
    "DataValidationError",
    "DatasetUnavailableError",
    "Problem",
    "RagrecError",
    "describe_validation_error",
]


class RagrecError(Exception):
    """Base class of every error ragrec raises on purpose."""


class ConfigError(RagrecError, ValueError):
    """A configuration value or parameter is invalid."""


class DatasetUnavailableError(RagrecError):
    """A dataset could not be downloaded, found, or verified."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One invalid value found in an input file.

    Attributes:
        row: 1-based data row (the header is row 0), or ``None`` when not row-specific.
        column: Column name, or ``None`` when the problem concerns the whole file.
        value: The offending value, as text.
    """

    row: int | None
    column: str | None
    value: str

    def describe(self) -> str:
        """Render as ``row 5, column 'movieId': '12'``."""
        parts = []
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        where = ", ".join(parts)
        value = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"{where}: {value!r}" if where else repr(value)


class DataValidationError(RagrecError, ValueError):
    """Input data is invalid: names the source, the problem, examples and a count.

    Args:
        source: File name or other description of the input (``"movies.csv"``).
        reason: What is wrong (``"duplicate item ids"``).
        problems: Offending values; the message shows the first few and the total.
        fix: How to fix it.
    """

    max_examples = 3

    def __init__(
        self, source: str, reason: str, problems: Sequence[Problem] = (), *, fix: str = ""
    ) -> None:
        self.source = source
        self.reason = reason
        self.problems = tuple(problems)
        self.fix = fix
        super().__init__(self._message())

    @property
    def count(self) -> int:
        """Number of offending values."""
        return len(self.problems)

    def _message(self) -> str:
        head = f"{self.source}: {self.reason}"
        if self.problems:
            shown = "; ".join(p.describe() for p in self.problems[: self.max_examples])
            more = self.count - self.max_examples
            tail = f" (and {more} more)" if more > 0 else ""
            head = f"{head} ({self.count} in all): {shown}{tail}"
        return f"{head}. {self.fix}" if self.fix else head


def describe_validation_error(exc: ValidationError, *, unknown_hint: str = "") -> str:
    """A pydantic error as one line: ``unknown key 'x'`` for typos, ``field=value: why``
    for bad values, joined by ``; ``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}{unknown_hint}")
        else:
            parts.append(f"{loc}={err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)
