"""Errors of the feedback store, and pydantic errors turned into them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ragrec.errors import DataValidationError, Problem, RagrecError

__all__ = [
    "FeedbackConflictError",
    "FeedbackStoreError",
    "FieldIssue",
    "InvalidFeedbackError",
    "StoreVersionError",
    "from_validation_error",
]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One invalid field: its name, the value received, what is wrong and the fix."""

    field: str
    value: Any
    why: str
    fix: str

    def describe(self) -> str:
        """Render as ``field 'value'=9.0: why (fix: ...)``."""
        return f"field {self.field!r}={_show(self.value)}: {self.why} (fix: {self.fix})"


class InvalidFeedbackError(DataValidationError):
    """A feedback event, recommendation record or weight set is malformed.

    Nothing is written when this is raised. The message names every invalid field,
    the value received, what is wrong and how to fix it.

    Attributes:
        issues: One entry per invalid field.
    """

    def __init__(self, source: str, issues: Sequence[FieldIssue]) -> None:
        self.issues = tuple(issues)
        problems = [Problem(None, i.field, _show(i.value)) for i in self.issues]
        fix = "; ".join(f"{i.field}: {i.fix}" for i in self.issues)
        super().__init__(source, "malformed", problems, fix=fix)

    def _message(self) -> str:
        return f"{self.source} is malformed: " + "; ".join(i.describe() for i in self.issues)


class FeedbackConflictError(DataValidationError):
    """An id is already stored with different content (events and recommendations are
    idempotent: resending identical content is a no-op, different content is this error).

    Nothing of the call that raised it is written.

    Attributes:
        differences: Field name -> (stored value, received value).
    """

    def __init__(self, source: str, differences: Mapping[str, tuple[Any, Any]], fix: str) -> None:
        self.differences = dict(differences)
        problems = [Problem(None, k, _show(new)) for k, (_, new) in self.differences.items()]
        super().__init__(source, "already stored with different content", problems, fix=fix)

    def _message(self) -> str:
        diffs = "; ".join(
            f"{name!r} stored {_show(old)}, received {_show(new)}"
            for name, (old, new) in self.differences.items()
        )
        return f"{self.source} is already stored with different content ({diffs}). {self.fix}"


class FeedbackStoreError(RagrecError):
    """The feedback store cannot be opened or written (names the store and the fix)."""


class StoreVersionError(FeedbackStoreError):
    """The store was written by a schema version this ragrec cannot read or migrate."""


def from_validation_error(
    exc: ValidationError, *, source: str, fields: Sequence[str], fixes: Mapping[str, str]
) -> InvalidFeedbackError:
    """A pydantic error as an :class:`InvalidFeedbackError`.

    Args:
        exc: The pydantic error.
        source: What was validated (``"feedback event 'e1'"``).
        fields: The model's top-level fields, listed when an unknown one is received.
        fixes: Field name -> fix for errors pydantic raises itself (type, missing).
            Messages of the model's own validators carry their fix after ``" -- fix: "``.
    """
    issues: list[FieldIssue] = []
    allowed = ", ".join(fields)
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc)
        top = loc[-1] if loc else ""
        value = err.get("input")
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, InvalidFeedbackError):
            # A nested record (a served item inside a recommendation) failed on its own:
            # report its fields under their full path rather than one nested message.
            prefix = f"{field}." if field else ""
            issues.extend(FieldIssue(prefix + i.field, i.value, i.why, i.fix) for i in inner.issues)
            continue
        field = field or "(record)"
        if err["type"] == "extra_forbidden":
            fix = f"remove it; the fields are {allowed}" if len(loc) == 1 else "remove it"
            issues.append(FieldIssue(field, value, "unknown field", fix))
            continue
        if err["type"] == "missing":
            value = "<missing>"
        msg = str(err["msg"]).removeprefix("Value error, ")
        why, sep, fix = msg.partition(" -- fix: ")
        if not sep:
            fix = fixes.get(top, "see the field's documentation")
        issues.append(FieldIssue(field, value, why, fix))
    return InvalidFeedbackError(source, issues)
