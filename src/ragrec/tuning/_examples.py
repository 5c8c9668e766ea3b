"""Training examples for the verbalizer objective, from interaction logs and feedback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.tuning._config import TuneConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CandidatesFn",
    "FeedbackSignal",
    "TuneExample",
    "build_examples",
    "feedback_examples",
    "holdout_rows",
]

CandidatesFn = Callable[[Any, np.ndarray, int], Sequence[int]]
"""``(user id, history positions, k) -> catalog positions``, best first (a retriever)."""


@dataclass(frozen=True)
class TuneExample:
    """One training prompt.

    Attributes:
        user_id: Whose sequence (or feedback) it came from.
        history: Catalog positions shown as history, oldest first (never the target or
            anything after it).
        candidates: Catalog positions in label order (``A`` is ``candidates[0]``).
        target: Index into ``candidates`` of the item the loss is about.
        kind: ``positive``: the item is the answer (cross-entropy); ``negative``: it is
            not (unlikelihood, ``-log(1 - p)``).
        source: ``log`` (a training sequence) or ``feedback``.
        ranks: Per candidate (label order), its retrieval rank among the candidates
            (1: the retriever's best guess), for prompts that show ranks; None when the
            examples were built without ``prompt.show_rank``.
    """

    user_id: Any
    history: tuple[int, ...]
    candidates: tuple[int, ...]
    target: int
    kind: Literal["positive", "negative"] = "positive"
    source: Literal["log", "feedback"] = "log"
    ranks: tuple[int, ...] | None = None

    def to_json(self, catalog: Catalog) -> dict[str, Any]:
        """The example with item ids (positions change when the catalog does)."""
        ids = catalog.item_ids
        return {
            "user_id": _plain(self.user_id),
            "history": [_plain(ids[p]) for p in self.history],
            "candidates": [_plain(ids[p]) for p in self.candidates],
            "target": self.target,
            "kind": self.kind,
            "source": self.source,
            "ranks": None if self.ranks is None else list(self.ranks),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], catalog: Catalog) -> TuneExample:
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: An item is no longer in the catalog.
        """
        hist = catalog.positions(list(data["history"])) if data["history"] else np.empty(0)
        cands = catalog.positions(list(data["candidates"]))
        if (hist < 0).any() or (cands < 0).any():
            raise ConfigError(
                "a saved tuning example names an item that left the catalog; start a new run "
                "instead of --resume"
            )
        return cls(
            data["user_id"],
            tuple(int(p) for p in hist),
            tuple(int(p) for p in cands),
            int(data["target"]),
            data["kind"],
            data["source"],
            None if data.get("ranks") is None else tuple(int(r) for r in data["ranks"]),
        )


@dataclass(frozen=True)
class FeedbackSignal:
    """A feedback event as tuning sees it: a user liked (``positive``) or disliked an
    item, after the history they had then."""

    user_id: Any
    item_id: Any
    positive: bool


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sequences(interactions: Interactions, catalog: Catalog) -> dict[Any, np.ndarray]:
    """Per user, catalog positions ordered by (timestamp, row); unknown items dropped."""
    pos = catalog.positions(interactions.item_ids)
    keep = pos >= 0
    users = interactions.user_ids[keep]
    pos = pos[keep]
    ts = interactions.timestamps[keep]
    order = np.lexsort((np.arange(len(pos)), ts))
    out: dict[Any, list[int]] = {}
    for row in order:
        out.setdefault(_plain(users[row]), []).append(int(pos[row]))
    return {u: np.asarray(v, dtype=np.int64) for u, v in out.items()}


def holdout_rows(catalog: Catalog, interactions: Interactions, last: int) -> Interactions:
    """``interactions`` without each user's last ``last`` catalog items (in the order
    :func:`build_examples` reads sequences): the rows to fit the retriever that ranks the
    candidates of ``holdout_last`` examples, so it has never seen their targets."""
    if last <= 0:
        return interactions
    pos = catalog.positions(interactions.item_ids)
    rows = np.flatnonzero(pos >= 0)
    order = rows[np.lexsort((rows, interactions.timestamps[rows]))]
    users = [_plain(u) for u in interactions.user_ids[order]]
    seen: dict[Any, int] = {}
    totals: dict[Any, int] = {}
    for u in users:
        totals[u] = totals.get(u, 0) + 1
    dropped = []
    for row, u in zip(order.tolist(), users, strict=True):
        seen[u] = seen.get(u, 0) + 1
        if seen[u] > totals[u] - last:
            dropped.append(row)
    keep = np.ones(len(interactions), dtype=bool)
    keep[dropped] = False
    return interactions.select(np.flatnonzero(keep))


def _candidates(
    user_id: Any,
    history: np.ndarray,
    target: int,
    *,
    n_items: int,
    candidates: CandidatesFn,
    config: TuneConfig,
    rng: np.random.Generator,
) -> tuple[tuple[int, ...], int, tuple[int, ...] | None] | None:
    """The target plus ``n_candidates - 1`` negatives (retrieval first, random to fill),
    in label order (shuffled, or the retriever's order); returns the candidates, the
    target's index and, with ``prompt.show_rank``, each candidate's retrieval rank among
    them (else None); or None when retrieval order is asked for with only hard negatives
    and the retriever missed the target."""
    n_wrong = config.n_candidates - 1
    n_random = min(config.random_negatives, n_wrong)
    by_retrieval = config.candidate_order == "retrieval"
    ranked = by_retrieval or config.prompt.show_rank != "none"
    excluded = set(history.tolist()) | {target}
    wrong: list[int] = []
    ranking: list[int] = []
    if ranked and n_random:
        # the whole ranking: every candidate's retrieval rank, random negatives included
        ranking = [int(p) for p in candidates(user_id, history, n_items)]
    elif n_wrong - n_random > 0:
        ranking = [int(p) for p in candidates(user_id, history, n_wrong + len(excluded))]
    if n_wrong - n_random > 0:
        for p in ranking:
            if p not in excluded and p not in wrong:
                wrong.append(p)
            if len(wrong) == n_wrong - n_random:
                break
    if by_retrieval and n_random == 0:
        seen = set(history.tolist())
        shown = [p for p in ranking if p not in seen][: config.n_candidates]
        if target not in shown:
            return None
    taken = excluded | set(wrong)
    available = n_items - len(taken)
    while len(wrong) < n_wrong and available > 0:
        p = int(rng.integers(n_items))
        if p not in taken:
            wrong.append(p)
            taken.add(p)
            available -= 1
    items = np.asarray([target, *wrong], dtype=np.int64)
    order = rng.permutation(len(items))
    ranks: tuple[int, ...] | None = None
    if ranked:
        # unranked items (the retriever never scored them) follow, in the random order
        rank = {p: i for i, p in enumerate(ranking)}
        keys = np.asarray([rank.get(int(items[i]), len(ranking)) for i in order])
        by_rank = order[np.argsort(keys, kind="stable")]
        if by_retrieval:
            order = by_rank
        if config.prompt.show_rank != "none":
            among = np.empty(len(items), dtype=np.int64)
            among[by_rank] = np.arange(1, len(items) + 1)
            ranks = tuple(int(among[i]) for i in order)
    shuffled = items[order]
    return tuple(int(p) for p in shuffled), int(np.flatnonzero(order == 0)[0]), ranks


def build_examples(
    catalog: Catalog,
    interactions: Interactions,
    *,
    candidates: CandidatesFn,
    config: TuneConfig | None = None,
    feedback: Sequence[FeedbackSignal] = (),
) -> list[TuneExample]:
    """Sliding-window examples from each user's sequence, plus feedback examples.

    For each user with more than ``min_history`` items, up to ``examples_per_user``
    target steps ``t`` are sampled (seeded); the history is the items before ``t`` (the
    prompt shows the latest ones within its budget), the candidates are the retriever's
    top ones for that history (excluding the history and the target) plus the target,
    shuffled or in retrieval order (``candidate_order``). The sampled steps are shuffled
    and built until ``max_examples`` is reached, after the feedback examples (they are
    few and recent, and come first).

    Raises:
        ConfigError: No interactions, or no user has a long enough sequence.
    """
    cfg = config or TuneConfig()
    if len(interactions) == 0:
        raise ConfigError(
            "interactions is empty: tuning learns from the store's interaction logs; build "
            "the store with interactions first"
        )
    rng = np.random.default_rng(cfg.seed)
    seqs = _sequences(interactions, catalog)
    users = [u for u, s in seqs.items() if len(s) > cfg.min_history]
    if not users and not feedback:
        longest = max((len(s) for s in seqs.values()), default=0)
        raise ConfigError(
            f"no training users: min_history={cfg.min_history} needs a user with more than "
            f"{cfg.min_history} items, the longest sequence has {longest}; lower min_history "
            "or add interactions"
        )
    out = feedback_examples(catalog, seqs, feedback, candidates=candidates, config=cfg, rng=rng)
    steps: list[tuple[Any, int]] = []
    for user in users:
        seq = seqs[user]
        first = cfg.min_history
        if cfg.holdout_last:
            first = max(first, len(seq) - cfg.holdout_last)
        span = np.arange(first, len(seq))
        chosen = rng.choice(span, size=min(cfg.examples_per_user, len(span)), replace=False)
        steps.extend((user, t) for t in np.sort(chosen).tolist())
    # shuffled before the candidates are built, so a max_examples cut costs only the
    # retrieval calls of the examples it keeps
    n_feedback = len(out)
    wanted = None if cfg.max_examples is None else max(cfg.max_examples - n_feedback, 0)
    missed = 0
    for i in rng.permutation(len(steps)).tolist():
        if wanted is not None and len(out) - n_feedback >= wanted:
            break
        user, t = steps[i]
        history = seqs[user][:t]
        picked = _candidates(
            user,
            history,
            int(seqs[user][t]),
            n_items=len(catalog),
            candidates=candidates,
            config=cfg,
            rng=rng,
        )
        if picked is None:
            missed += 1
            continue
        cands, target, ranks = picked
        out.append(TuneExample(user, tuple(history.tolist()), cands, target, ranks=ranks))
    if cfg.max_examples is not None:
        out = out[: cfg.max_examples]
    if missed:
        logger.info(
            "tuning examples: %d targets skipped (not in the retriever's top %d)",
            missed,
            cfg.n_candidates,
        )
    if not out:
        raise ConfigError(
            f"no tuning examples: the retriever ranked none of the {missed} sampled targets "
            f"in its top n_candidates={cfg.n_candidates}; add random_negatives or use "
            "candidate_order='shuffled'"
        )
    logger.info("tuning examples: %d (%d users with sequences)", len(out), len(users))
    return out


def feedback_examples(
    catalog: Catalog,
    sequences: dict[Any, np.ndarray],
    feedback: Sequence[FeedbackSignal],
    *,
    candidates: CandidatesFn,
    config: TuneConfig,
    rng: np.random.Generator,
) -> list[TuneExample]:
    """Examples from feedback: each event's item among retrieval candidates for the
    history the user had (their sequence plus earlier liked items); a like makes it the
    answer (``positive``), a dislike a wrong one (``negative``). Items not in the catalog
    are skipped."""
    if not config.feedback:
        return []
    out: list[TuneExample] = []
    added: dict[Any, list[int]] = {}
    for signal in feedback:
        pos = int(catalog.positions([signal.item_id])[0])
        if pos < 0:
            continue
        user = _plain(signal.user_id)
        base = sequences.get(user, np.empty(0, np.int64))
        history = np.asarray(
            [p for p in [*base.tolist(), *added.get(user, [])] if p != pos], dtype=np.int64
        )
        picked = _candidates(
            user,
            history,
            pos,
            n_items=len(catalog),
            candidates=candidates,
            config=config,
            rng=rng,
        )
        if picked is None:  # retrieval order, and the retriever does not rank the item
            continue
        cands, target, ranks = picked
        kind: Literal["positive", "negative"] = "positive" if signal.positive else "negative"
        out.append(
            TuneExample(user, tuple(history.tolist()), cands, target, kind, "feedback", ranks)
        )
        if signal.positive:
            added.setdefault(user, []).append(pos)
    return out
