"""What an evaluation protocol produces: the prepared data (:class:`ProtocolData`) and the
scored cases of a split (:class:`EvalCases`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragrec.data import Catalog, Interactions, user_sequences
from ragrec.errors import ConfigError

__all__ = ["EvalCases", "ProtocolData", "ProtocolStep", "Split"]

Split = Literal["validation", "test"]
_SPLITS: tuple[Split, ...] = ("validation", "test")


@dataclass(frozen=True)
class ProtocolStep:
    """Sizes after one preparation step (for ``ragrec data stats``)."""

    name: str
    users: int
    items: int
    interactions: int


@dataclass(frozen=True)
class EvalCases:
    """The users of one split, each with a time-ordered history and one target.

    Attributes:
        split: ``"validation"`` or ``"test"``.
        user_ids: One id per case.
        histories: Per case, catalog positions of the items seen before the target,
            oldest first. These are excluded from scoring.
        targets: Per case, the catalog position of the held-out item.
        ratings: Per case, the values (ratings) aligned with ``histories``.
        candidates: Per case, the catalog positions ranked (the target among them), for
            candidate-set protocols such as ``llmrank-c20``; empty: every catalog item is
            ranked.
    """

    split: Split
    user_ids: np.ndarray
    histories: tuple[np.ndarray, ...]
    targets: np.ndarray
    ratings: tuple[np.ndarray, ...] = ()
    candidates: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.user_ids)

    def head(self, n: int) -> EvalCases:
        """The first ``n`` cases."""
        return self.take(np.arange(min(n, len(self))))

    def take(self, rows: np.ndarray) -> EvalCases:
        """The cases at ``rows`` (indices), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return EvalCases(
            self.split,
            self.user_ids[rows],
            tuple(self.histories[i] for i in rows),
            self.targets[rows],
            tuple(self.ratings[i] for i in rows) if self.ratings else (),
            tuple(self.candidates[i] for i in rows) if self.candidates else (),
        )


@dataclass(frozen=True, eq=False)
class ProtocolData:
    """A dataset prepared by a protocol.

    The optional per-split fields default to the LlamaRec behaviour, so a protocol only
    sets what differs. They are keyed by split and must not be modified. Equality is
    identity (the fields hold arrays, as :class:`Interactions` does).

    Attributes:
        name: Protocol name.
        catalog: The items that remain after filtering; every one is scored unless the
            protocol gives candidate sets.
        train: Training rows.
        validation: One validation target row per user.
        test: One test target row per user.
        steps: Sizes after each preparation step.
        fit: Per split, the rows a ranker is fit on; a split missing here: ``train``.
        history: Per split, the rows the case histories are drawn from (rows on items
            outside the catalog are skipped); missing: ``train`` for validation,
            ``train`` + ``validation`` for test.
        candidates: Per split, per user id, the catalog positions ranked for that user's
            case (the target among them); a split missing here: the whole catalog.
        options: The resolved protocol options (defaults filled in), for reports.
    """

    name: str
    catalog: Catalog
    train: Interactions
    validation: Interactions
    test: Interactions
    steps: tuple[ProtocolStep, ...]
    fit: Mapping[Split, Interactions] = field(default_factory=dict)
    history: Mapping[Split, Interactions] = field(default_factory=dict)
    candidates: Mapping[Split, Mapping[Any, np.ndarray]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("fit", "history", "candidates"):
            unknown = sorted(set(getattr(self, name)) - set(_SPLITS))
            if unknown:
                raise ConfigError(
                    f"ProtocolData.{name} has keys {unknown}; allowed: 'validation', 'test'"
                )

    def fit_rows(self, split: Split) -> Interactions:
        """Rows a ranker is fit on for ``split``.

        ``llamarec``, ``llmrank-c20`` and ``custom`` fit on the training rows for both
        splits (as in LlamaRec; for the test split the validation item joins each user's
        history as input, not as training data). ``temporal`` fits the test split on
        every row before the test cutoff.
        """
        _check_split(split)
        return self.fit.get(split, self.train)

    def history_rows(self, split: Split) -> Interactions:
        """Rows the histories of ``split``'s cases come from (see :attr:`history`)."""
        _check_split(split)
        if split in self.history:
            return self.history[split]
        return self.train if split == "validation" else self.train.concat(self.validation)

    def cases(self, split: Split) -> EvalCases:
        """The scored cases of ``split``, sorted by user id; with candidate sets for
        candidate protocols (``llmrank-c20``)."""
        _check_split(split)
        targets = self.validation if split == "validation" else self.test
        cases = _cases(split, self.catalog, self.history_rows(split), targets)
        if split not in self.candidates:
            return cases
        per_user = self.candidates[split]
        missing = [u for u in cases.user_ids.tolist() if u not in per_user]
        if missing:
            raise ConfigError(
                f"protocol {self.name!r}: {len(missing)} {split} users have no candidate "
                f"set (first: {missing[0]!r}); prepare the data again with prepare_protocol"
            )
        return EvalCases(
            split=cases.split,
            user_ids=cases.user_ids,
            histories=cases.histories,
            targets=cases.targets,
            ratings=cases.ratings,
            candidates=tuple(per_user[u] for u in cases.user_ids.tolist()),
        )


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ConfigError(f"split={split!r} is not allowed; use 'validation' or 'test'")


def _cases(
    split: Split, catalog: Catalog, history: Interactions, targets: Interactions
) -> EvalCases:
    positions, values = user_sequences(catalog, history)
    order = np.argsort(targets.user_ids, kind="stable")
    users = targets.user_ids[order]
    return EvalCases(
        split=split,
        user_ids=users,
        histories=tuple(positions.get(u, np.empty(0, np.int64)) for u in users),
        ratings=tuple(values.get(u, np.empty(0, np.float64)) for u in users),
        targets=catalog.positions(targets.item_ids[order]),
    )
