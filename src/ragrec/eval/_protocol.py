"""Evaluation protocols: how a dataset becomes training rows and scored targets.

Four protocols, by name (:data:`PROTOCOLS`): ``"llamarec"`` (per-user leave-one-out over
a 5-core, every item ranked), ``"llmrank-c20"`` (the same data, each target ranked among
19 sampled negatives), ``"temporal"`` (a global time cutoff) and ``"custom"`` (splits
read from files). :func:`prepare_protocol` builds any of them from a name and options.
What they produce, :class:`ProtocolData` and its :class:`EvalCases`, is defined in
:mod:`ragrec.eval._cases` (and importable from here too).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions, kcore, leave_one_out, read_table, user_sequences
from ragrec.errors import ConfigError, DataValidationError, describe_validation_error
from ragrec.eval._cases import _SPLITS, EvalCases, ProtocolData, ProtocolStep, Split

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "EvalCases",
    "ProtocolData",
    "ProtocolStep",
    "Split",
    "custom_protocol",
    "llamarec_protocol",
    "llmrank_c20_protocol",
    "prepare_protocol",
    "protocol_options",
    "temporal_protocol",
]

ProtocolName = Literal["llamarec", "llmrank-c20", "temporal", "custom"]
PROTOCOLS: tuple[ProtocolName, ...] = ("llamarec", "llmrank-c20", "temporal", "custom")


def _sizes(name: str, rows: Interactions) -> ProtocolStep:
    return ProtocolStep(name, rows.n_users, rows.n_items, len(rows))


def _titled(catalog: Catalog) -> Catalog:
    return catalog.subset(np.flatnonzero([bool(str(t).strip()) for t in catalog.titles]))


def _used(catalog: Catalog, rows: Interactions) -> Catalog:
    """The catalog's items that occur in ``rows``, in catalog order."""
    return catalog.subset(np.sort(catalog.positions(pd.unique(rows.item_ids))))


def _first_per_user(rows: Interactions) -> np.ndarray:
    """Row positions of each user's first row by (timestamp, item id), in user order."""
    frame = pd.DataFrame({"u": rows.user_ids, "t": rows.timestamps, "i": rows.item_ids})
    ordered = frame.sort_values(["u", "t", "i"], kind="stable")
    return ordered.drop_duplicates("u", keep="first").index.to_numpy()


# llamarec --------------------------------------------------------------------------------


def llamarec_protocol(catalog: Catalog, interactions: Interactions, *, k: int = 5) -> ProtocolData:
    """The LlamaRec protocol (as used for ML-100k / ml-latest-small in its code).

    All ratings count as interactions; interactions on items without a title (or not in
    the catalog) are dropped; an iterative ``k``-core keeps users and items with at least
    ``k`` interactions; each user's rows sorted by (timestamp, item id) give the last as
    test target, the one before as validation target, the rest as training. Every
    remaining item is scored, the user's history excluded. Rankers are fit on the
    training rows for both splits.

    Args:
        catalog: Items (titles required by :class:`Catalog`).
        interactions: All interactions.
        k: Core size.

    Returns:
        The prepared data, with sizes after each step.
    """
    steps = [_sizes("loaded", interactions)]
    titled = _titled(catalog)
    rows = interactions.restrict_items(titled)
    steps.append(_sizes("items with a title", rows))
    rows = kcore(rows, k)
    steps.append(_sizes(f"{k}-core (iterative)", rows))
    if len(rows) == 0:
        raise ConfigError(f"no interactions survive the {k}-core filter; use a smaller k")
    split = leave_one_out(rows)
    steps += [
        _sizes("train", split.train),
        _sizes("validation targets", split.validation),
        _sizes("test targets", split.test),
    ]
    return ProtocolData(
        name="llamarec",
        catalog=_used(titled, rows),
        train=split.train,
        validation=split.validation,
        test=split.test,
        steps=tuple(steps),
        options={"k": k},
    )


# llmrank-c20 -----------------------------------------------------------------------------


def llmrank_c20_protocol(
    catalog: Catalog,
    interactions: Interactions,
    *,
    k: int = 5,
    negatives: int = 19,
    seed: int = 0,
) -> ProtocolData:
    """LLMRank's candidate protocol on MovieLens (Hou et al., ECIR 2024): rank 20 items.

    The data are prepared exactly as by :func:`llamarec_protocol` (titled items,
    ``k``-core, leave-one-out by time; fit on training rows). Each case then ranks only
    its target plus ``negatives`` items drawn uniformly without replacement from the
    catalog items the user never interacted with (in any input row, training,
    validation or test), in a seeded random order; they are stored per case in
    :attr:`EvalCases.candidates`. Validation and test draw from independent streams
    derived from ``seed``; the same seed gives identical candidates.

    Report ``ndcg@1``, ``ndcg@5``, ``ndcg@10`` and ``ndcg@20`` (as LLMRank does); with
    20 candidates ``recall@20`` is always 1.

    Args:
        catalog: Items.
        interactions: All interactions.
        k: Core size.
        negatives: Sampled negatives per case (at least 1).
        seed: Seed of the negative sampling and the candidate order.

    Returns:
        The prepared data, with ``candidates`` for both splits.

    Raises:
        ConfigError: Invalid ``negatives`` or ``seed``, or a user has fewer than
            ``negatives`` unseen items.
    """
    if negatives < 1:
        raise ConfigError(f"negatives={negatives} must be >= 1 (LLMRank uses 19)")
    if seed < 0:
        raise ConfigError(f"seed={seed} must be a non-negative integer")
    base = llamarec_protocol(catalog, interactions, k=k)
    seen, _ = user_sequences(base.catalog, interactions)
    candidates: dict[Split, Mapping[Any, np.ndarray]] = {}
    for index, split in enumerate(_SPLITS):
        targets = base.validation if split == "validation" else base.test
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        candidates[split] = _sample_candidates(
            base.catalog, targets, seen, negatives=negatives, rng=rng
        )
    return ProtocolData(
        name="llmrank-c20",
        catalog=base.catalog,
        train=base.train,
        validation=base.validation,
        test=base.test,
        steps=base.steps,
        candidates=candidates,
        options={"k": k, "negatives": negatives, "seed": seed},
    )


def _sample_candidates(
    catalog: Catalog,
    targets: Interactions,
    seen: Mapping[Any, np.ndarray],
    *,
    negatives: int,
    rng: np.random.Generator,
) -> dict[Any, np.ndarray]:
    order = np.argsort(targets.user_ids, kind="stable")
    users = targets.user_ids[order]
    positions = catalog.positions(targets.item_ids[order])
    out: dict[Any, np.ndarray] = {}
    unseen = np.ones(len(catalog), dtype=bool)
    for user, target in zip(users.tolist(), positions.tolist(), strict=True):
        history = seen.get(user, np.empty(0, np.int64))
        unseen[history] = False
        unseen[target] = False
        pool = np.flatnonzero(unseen)
        unseen[history] = True
        unseen[target] = True
        if len(pool) < negatives:
            raise ConfigError(
                f"user {user!r} has {len(pool)} unseen items, fewer than negatives="
                f"{negatives}; use fewer negatives"
            )
        drawn = rng.choice(pool, size=negatives, replace=False)
        out[user] = rng.permutation(np.concatenate([[target], drawn])).astype(np.int64)
    return out


# temporal --------------------------------------------------------------------------------


def temporal_protocol(
    catalog: Catalog,
    interactions: Interactions,
    *,
    validation_quantile: float = 0.8,
    test_quantile: float = 0.9,
) -> ProtocolData:
    """A global temporal split: one pair of time cutoffs for all users.

    Interactions on items without a title (or not in the catalog) are dropped; there is
    no k-core (it would use future rows). The cutoffs are the timestamps at the given
    quantiles of all rows (``np.quantile(..., method="higher")``); like
    :func:`ragrec.data.temporal_split`, a row *at* a cutoff belongs to the later period:

    * training: rows before the validation cutoff;
    * validation period: rows in [validation cutoff, test cutoff); each user with such
      rows gets one validation case, their first by (timestamp, item id); its history
      is the user's training rows;
    * test period: rows at or after the test cutoff; each user with such rows gets one
      test case, their first; its history is all the user's rows before the test cutoff
      (training and validation period).

    Histories are thus strictly earlier than their target. Users without rows before a
    target's period stay in as cold-start cases with an empty history. The catalog is
    every titled item with a row in any period, so items first seen after a cutoff can
    be targets (and are scored) although no model saw them. Rankers are fit on the
    training rows for validation, and on every row before the test cutoff for test.
    Other rows of a period (after the user's first) are neither targets nor history.

    Args:
        catalog: Items.
        interactions: All interactions.
        validation_quantile: Fraction of rows (by time) before the validation cutoff.
        test_quantile: Fraction of rows before the test cutoff; above
            ``validation_quantile``.

    Returns:
        The prepared data; ``validation`` and ``test`` hold the target rows,
        ``fit["test"]`` and ``history["test"]`` the rows before the test cutoff.

    Raises:
        ConfigError: Quantiles out of order or outside (0, 1), or an empty period.
    """
    if not 0.0 < validation_quantile < test_quantile < 1.0:
        raise ConfigError(
            f"validation_quantile={validation_quantile}, test_quantile={test_quantile}: "
            "need 0 < validation_quantile < test_quantile < 1, e.g. 0.8 and 0.9"
        )
    steps = [_sizes("loaded", interactions)]
    titled = _titled(catalog)
    rows = interactions.restrict_items(titled)
    steps.append(_sizes("items with a title", rows))
    if len(rows) == 0:
        raise ConfigError("no interactions on catalog items with a title; check the data")
    stamps = rows.timestamps
    val_cut = int(np.quantile(stamps, validation_quantile, method="higher"))
    test_cut = int(np.quantile(stamps, test_quantile, method="higher"))
    train = rows.select(stamps < val_cut)
    val_period = rows.select((stamps >= val_cut) & (stamps < test_cut))
    test_period = rows.select(stamps >= test_cut)
    for name, part in (
        ("training", train),
        ("validation period", val_period),
        ("test period", test_period),
    ):
        if len(part) == 0:
            raise ConfigError(
                f"the {name} is empty (cutoffs at {val_cut} and {test_cut}, quantiles "
                f"{validation_quantile} and {test_quantile}); move the quantiles apart"
            )
    before_test = rows.select(stamps < test_cut)
    validation = val_period.select(_first_per_user(val_period))
    test = test_period.select(_first_per_user(test_period))
    steps += [
        _sizes(f"train (before {val_cut})", train),
        _sizes(f"validation period (from {val_cut})", val_period),
        _sizes("validation targets", validation),
        _sizes(f"test period (from {test_cut})", test_period),
        _sizes("test targets", test),
    ]
    logger.info(
        "temporal: cutoffs %d and %d; %d validation and %d test cases",
        val_cut,
        test_cut,
        len(validation),
        len(test),
    )
    return ProtocolData(
        name="temporal",
        catalog=_used(titled, rows),
        train=train,
        validation=validation,
        test=test,
        steps=tuple(steps),
        fit={"test": before_test},
        history={"test": before_test},
        options={
            "validation_quantile": validation_quantile,
            "test_quantile": test_quantile,
            "validation_cutoff": val_cut,
            "test_cutoff": test_cut,
        },
    )


# custom ----------------------------------------------------------------------------------


def custom_protocol(
    catalog: Catalog,
    *,
    train: str | Path,
    validation: str | Path,
    test: str | Path,
) -> ProtocolData:
    """Splits read from three files.

    Each file is CSV/TSV, JSONL or Parquet (by suffix) with columns ``user_id``,
    ``item_id`` and optionally ``timestamp`` (Unix seconds or ISO-8601) and ``rating``
    (or ``value``). Either every file has a ``timestamp`` column or none has; without
    one, time is the row order across train, then validation, then test.

    The validation and test files give targets: when a user has several rows in one,
    the first by (timestamp, item id) is the target and the rest are ignored as targets
    (counted in the log). Validation histories are the user's training rows; test
    histories add all of the user's validation-file rows. Users absent from the
    training file are cold-start cases with an empty history. Rankers are fit on the
    training rows for both splits (as in LlamaRec). The catalog is the given catalog's
    items that occur in any of the files, in catalog order.

    Args:
        catalog: Items; every item of the files must be in it.
        train: Training rows.
        validation: Validation targets.
        test: Test targets.

    Returns:
        The prepared data.

    Raises:
        ConfigError: A file is missing or unreadable, lacks a column, has items not in
            the catalog, or only some files have timestamps.
    """
    paths = {"train": Path(train), "validation": Path(validation), "test": Path(test)}
    frames: dict[str, pd.DataFrame] = {}
    for option, path in paths.items():
        if not path.is_file():
            raise ConfigError(
                f"protocol 'custom': option {option}={str(path)!r} is not a file; "
                "check the path (relative paths start at the working directory)"
            )
        try:
            frames[option] = read_table(path)
        except DataValidationError as exc:
            raise _file_error(option, path, exc) from exc
    timed = {option: "timestamp" in frame.columns for option, frame in frames.items()}
    if len(set(timed.values())) > 1:
        have = [o for o, t in timed.items() if t]
        lack = [o for o, t in timed.items() if not t]
        raise ConfigError(
            f"protocol 'custom': the {', '.join(have)} file(s) have a 'timestamp' column, "
            f"the {', '.join(lack)} file(s) do not; give all files timestamps or none"
        )
    parts: dict[str, Interactions] = {}
    offset = 0
    for option, frame in frames.items():
        try:
            rows = _interactions(frame, paths[option])
        except DataValidationError as exc:
            raise _file_error(option, paths[option], exc) from exc
        _check_items(option, paths[option], rows, catalog)
        if not timed[option]:
            rows = Interactions(
                user_ids=rows.user_ids,
                item_ids=rows.item_ids,
                values=rows.values,
                timestamps=rows.timestamps + offset,
                kinds=rows.kinds,
            )
            offset += len(rows)
        parts[option] = rows
    for option in ("validation", "test"):
        if len(parts[option]) == 0:
            raise ConfigError(
                f"protocol 'custom': the {option} file {str(paths[option])!r} has no rows; "
                "give at least one target row"
            )
    steps = [_sizes("train file", parts["train"])]
    targets: dict[str, Interactions] = {}
    for option in ("validation", "test"):
        rows = parts[option]
        targets[option] = rows.select(_first_per_user(rows))
        extra = len(rows) - len(targets[option])
        if extra:
            logger.info(
                "custom: %d %s rows are not targets (each user's first row is)", extra, option
            )
        steps += [_sizes(f"{option} file", rows), _sizes(f"{option} targets", targets[option])]
    everything = parts["train"].concat(parts["validation"]).concat(parts["test"])
    return ProtocolData(
        name="custom",
        catalog=_used(catalog, everything),
        train=parts["train"],
        validation=targets["validation"],
        test=targets["test"],
        steps=tuple(steps),
        history={"test": parts["train"].concat(parts["validation"])},
        options={option: str(path) for option, path in paths.items()},
    )


def _file_error(option: str, path: Path, exc: DataValidationError) -> ConfigError:
    return ConfigError(f"protocol 'custom', option {option}={str(path)!r}: {exc}")


def _interactions(frame: pd.DataFrame, path: Path) -> Interactions:
    columns = {"user": "user_id", "item": "item_id"}
    if "timestamp" in frame.columns:
        columns["timestamp"] = "timestamp"
    value = next((c for c in ("rating", "value") if c in frame.columns), None)
    if value is not None:
        columns["value"] = value
    return Interactions.from_frame(frame, columns=columns, source=path.name)


def _check_items(option: str, path: Path, rows: Interactions, catalog: Catalog) -> None:
    # on_invalid="error" keeps every row, so row i of ``rows`` is data row i + 1 of the file
    unknown = np.flatnonzero(catalog.positions(rows.item_ids) < 0)
    if unknown.size == 0:
        return
    first = int(unknown[0])
    item = rows.item_ids[first : first + 1].tolist()[0]
    raise ConfigError(
        f"protocol 'custom', option {option}={str(path)!r}: row {first + 1} has item_id "
        f"{item!r}, which is not in the catalog ({len(catalog)} "
        f"items; {unknown.size} such rows in all); remove those rows, or use a catalog "
        "(data.path) that holds the items"
    )


# by name -----------------------------------------------------------------------------------


_Options = Settings


class _LlamaRecOptions(_Options):
    k: int = Field(default=5, ge=1, description="Core size.")


class _C20Options(_Options):
    k: int = Field(default=5, ge=1, description="Core size.")
    negatives: int = Field(default=19, ge=1, description="Sampled negatives per case.")
    seed: int = Field(default=0, ge=0, description="Seed of negatives and candidate order.")


class _TemporalOptions(_Options):
    validation_quantile: float = Field(
        default=0.8, gt=0, lt=1, description="Fraction of rows before the validation cutoff."
    )
    test_quantile: float = Field(
        default=0.9, gt=0, lt=1, description="Fraction of rows before the test cutoff."
    )


class _CustomOptions(_Options):
    train: str = Field(description="Training rows (CSV/TSV, JSONL or Parquet).")
    validation: str = Field(description="Validation target rows.")
    test: str = Field(description="Test target rows.")


_OPTIONS: dict[str, type[_Options]] = {
    "llamarec": _LlamaRecOptions,
    "llmrank-c20": _C20Options,
    "temporal": _TemporalOptions,
    "custom": _CustomOptions,
}


def protocol_options(name: str) -> dict[str, Any]:
    """The options a protocol takes, with their defaults (``None``: required).

    Raises:
        ConfigError: Unknown protocol.
    """
    model = _options_model(name)
    return {
        key: None if info.is_required() else info.default
        for key, info in model.model_fields.items()
    }


def _options_model(name: str) -> type[_Options]:
    if name not in _OPTIONS:
        raise ConfigError(f"protocol {name!r} is not known; allowed: {', '.join(PROTOCOLS)}")
    return _OPTIONS[name]


def prepare_protocol(
    name: str, catalog: Catalog, interactions: Interactions, **options: Any
) -> ProtocolData:
    """Prepare data by protocol name, with that protocol's options.

    ============  ====================================================================
    name          options (defaults)
    ============  ====================================================================
    llamarec      ``k`` (5)
    llmrank-c20   ``k`` (5), ``negatives`` (19), ``seed`` (0)
    temporal      ``validation_quantile`` (0.8), ``test_quantile`` (0.9)
    custom        ``train``, ``validation``, ``test``: file paths, required;
                  ``interactions`` is not used
    ============  ====================================================================

    Args:
        name: One of :data:`PROTOCOLS`.
        catalog: Items.
        interactions: All interactions.
        **options: The protocol's options (``EvalConfig.protocol_options``).

    Raises:
        ConfigError: Unknown protocol or option, invalid option values, or data the
            protocol cannot split.
    """
    model = _options_model(name)
    allowed = list(model.model_fields)
    for key in options:
        if key not in model.model_fields:
            raise ConfigError(
                f"protocol {name!r} has no option {key!r}; allowed: {', '.join(allowed)}"
            )
    missing = [
        k for k, info in model.model_fields.items() if info.is_required() and k not in options
    ]
    if missing:
        raise ConfigError(
            f"protocol {name!r} needs option(s) {', '.join(missing)} "
            f"(protocol_options = {{ {', '.join(f'{m} = ...' for m in missing)} }})"
        )
    try:
        parsed = model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"protocol {name!r} options: {describe_validation_error(exc)}") from exc
    values = parsed.model_dump()
    if name == "llamarec":
        return llamarec_protocol(catalog, interactions, **values)
    if name == "llmrank-c20":
        return llmrank_c20_protocol(catalog, interactions, **values)
    if name == "temporal":
        return temporal_protocol(catalog, interactions, **values)
    return custom_protocol(catalog, **values)
