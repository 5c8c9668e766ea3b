"""The exemplar pool file: JSON records written atomically and read back with every
invalid record named."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragrec.errors import ConfigError, DataValidationError, Problem
from ragrec.prompting._exemplar_model import Exemplar

__all__ = ["POOL_FORMAT", "POOL_VERSION", "read_pool_file", "write_pool_file"]

POOL_FORMAT = "ragrec-exemplar-pool"
POOL_VERSION = 1


class _Record(BaseModel):
    """One exemplar as stored in a pool file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = None
    user_id: int | str | None
    source: Literal["train", "feedback"] = "train"
    history: list[str]
    history_ids: list[int | str] = Field(default_factory=list)
    candidates: list[str]
    candidate_ids: list[int | str] = Field(default_factory=list)
    label: str
    reason: str | None = None


def write_pool_file(target: Path, records: list[dict[str, Any]]) -> None:
    """Write exemplar records (:meth:`Exemplar.to_dict`) as a pool file, atomically (a
    temporary file renamed over ``target``)."""
    payload = {"format": POOL_FORMAT, "version": POOL_VERSION, "exemplars": records}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_pool_file(source: Path) -> list[Exemplar]:
    """The exemplars of a pool file written by :func:`write_pool_file`.

    Raises:
        ConfigError: The file does not exist.
        DataValidationError: The file is not a pool file, or a record is invalid
            (names the file, the record and the field).
    """
    fix = "restore the file from a backup, or delete it and seed a new pool"
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"exemplar pool file {str(source)!r} not found; check the path, or seed a pool "
            "and save() it first"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(str(source), f"cannot be read as UTF-8 ({exc})", fix=fix) from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataValidationError(str(source), f"not valid JSON ({exc})", fix=fix) from exc
    if not isinstance(payload, dict) or payload.get("format") != POOL_FORMAT:
        raise DataValidationError(
            str(source),
            f"not an exemplar pool file (expected a JSON object with format={POOL_FORMAT!r})",
            fix=fix,
        )
    if payload.get("version") != POOL_VERSION:
        raise DataValidationError(
            str(source),
            f"pool file version {payload.get('version')!r} is not supported "
            f"(this ragrec reads version {POOL_VERSION})",
            fix="seed and save the pool again with this version",
        )
    records = payload.get("exemplars")
    if not isinstance(records, list):
        raise DataValidationError(
            str(source), "'exemplars' must be a list of exemplar records", fix=fix
        )
    problems: list[Problem] = []
    exemplars: list[Exemplar] = []
    for row, raw in enumerate(records, start=1):
        try:
            rec = _Record.model_validate(raw)
            ex = Exemplar(
                user_id=rec.user_id,
                history=tuple(rec.history),
                candidates=tuple(rec.candidates),
                label=rec.label,
                reason=rec.reason,
                source=rec.source,
                history_ids=tuple(rec.history_ids),
                candidate_ids=tuple(rec.candidate_ids),
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            problems.append(Problem(row, where, f"{err['msg']}{got}"))
            continue
        except ConfigError as exc:
            problems.append(Problem(row, None, str(exc)))
            continue
        if rec.id is not None and rec.id != ex.id:
            problems.append(Problem(row, "id", f"{rec.id} does not match its content ({ex.id})"))
            continue
        exemplars.append(ex)
    if problems:
        raise DataValidationError(
            str(source),
            "invalid exemplar records",
            problems,
            fix="correct or delete those records (an edited record needs its 'id' "
            "removed, to be recomputed)",
        )
    return exemplars
