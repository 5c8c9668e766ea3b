"""Ranking metrics as small frozen objects, parsed from strings such as ``"ndcg@10"``.

Each metric has a cutoff ``k`` (``None`` means the whole ranked list) and two ways to
score:

* :meth:`Metric.compute` scores one ranked list of item ids against its relevant items
  (binary relevance, or graded gains for :class:`NDCG` when given a mapping).
* :meth:`Metric.from_ranks` scores many users at once in the single-target case (one
  relevant item per user, e.g. leave-one-out), from the 1-based rank of that item.

The definitions follow trec_eval (``ndcg_cut``, ``recall``, ``P``, ``map_cut`` and
``recip_rank`` on the list cut at ``k``), and the tests check them against
``pytrec_eval``.

Example:
    >>> metric = parse_metric("ndcg@3")
    >>> metric.name
    'ndcg@3'
    >>> round(metric.compute(["a", "b", "c"], {"b"}), 4)
    0.6309
"""

from __future__ import annotations

import difflib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from ragrec.errors import ConfigError

__all__ = [
    "MRR",
    "NDCG",
    "UNRANKED",
    "AveragePrecision",
    "HitRate",
    "Metric",
    "Precision",
    "Recall",
    "parse_metric",
    "parse_metrics",
]

UNRANKED: Final[int] = int(np.iinfo(np.int64).max)
"""Rank to pass to :meth:`Metric.from_ranks` for a target item that was not ranked.

With a cutoff ``k`` any rank above ``k`` scores 0; without a cutoff only ranks of at
least ``UNRANKED`` do, so use this value rather than, say, the number of items.
"""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Metric(ABC):
    """A ranking metric at an optional cutoff.

    Subclasses define the formula; this class validates inputs and applies the
    cutoff. Metrics are immutable, hashable and compare equal when they have the same
    type and cutoff.

    Attributes:
        k: Cutoff: only the top ``k`` ranked items count. ``None`` means no cutoff
            (the whole ranked list).

    Raises:
        ConfigError: If ``k`` is not a positive integer or ``None``.
    """

    key: ClassVar[str]

    k: int | None = None

    def __post_init__(self) -> None:
        k = self.k
        if k is None:
            return
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ConfigError(
                f"{type(self).__name__} cutoff k must be a positive integer or None "
                f"(no cutoff), got {k!r} of type {type(k).__name__}; "
                f"write e.g. {type(self).__name__}(k=10)"
            )
        if k < 1:
            raise ConfigError(
                f"{type(self).__name__} cutoff k must be a positive integer or None "
                f"(no cutoff), got {k}; write e.g. {type(self).__name__}(k=10)"
            )
        # Normalise numpy integers so that equality, hashing and names are stable.
        object.__setattr__(self, "k", int(k))

    @property
    def name(self) -> str:
        """The metric as a string that :func:`parse_metric` reads back: ``"ndcg@10"``."""
        return self.key if self.k is None else f"{self.key}@{self.k}"

    def __str__(self) -> str:
        return self.name

    def compute(
        self,
        ranked: Sequence[Hashable],
        relevant: Collection[Hashable] | Mapping[Hashable, float],
    ) -> float:
        """Score one ranked list.

        Args:
            ranked: Item ids, best first. Ids must be unique. Items past the cutoff
                are ignored.
            relevant: The relevant item ids. A mapping from id to gain is also
                accepted: ids with a gain above 0 are relevant, and :class:`NDCG` uses
                the gains as graded relevance (the other metrics are binary).

        Returns:
            The metric value in ``[0, 1]``. An empty relevant set (or a mapping with no
            positive gain) scores 0.0, as in trec_eval.

        Raises:
            TypeError: If ``ranked`` or ``relevant`` is a string, or an id is not
                hashable.
            ValueError: If ``ranked`` repeats an id, or a gain is not a finite number.
        """
        items = _check_ranked(ranked)
        gains = _relevance_gains(relevant)
        if not gains:
            return 0.0
        top = items if self.k is None else items[: self.k]
        return self._score(top, gains)

    def from_ranks(self, ranks: npt.ArrayLike) -> FloatArray:
        """Score many users at once when each has exactly one relevant item.

        Args:
            ranks: Integer array of the 1-based rank of each user's relevant item.
                Any rank above ``k`` scores 0; pass :data:`UNRANKED` for an item that
                was not ranked at all (needed when ``k`` is ``None``).

        Returns:
            A float64 array of the same shape with each user's value; the same as
            :meth:`compute` on a list holding the item at that rank.

        Raises:
            ValueError: If ``ranks`` is not an integer array or holds a rank below 1.
        """
        r = _check_ranks(ranks)
        within = r < UNRANKED if self.k is None else r <= self.k
        out = np.zeros(r.shape, dtype=np.float64)
        out[within] = self._single_target(r[within].astype(np.float64))
        return out

    @abstractmethod
    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        """Value of the list cut at ``k``; ``gains`` holds only positive gains."""

    @abstractmethod
    def _single_target(self, ranks: FloatArray) -> FloatArray:
        """Values for single-target ranks that lie within the cutoff."""


@dataclass(frozen=True, slots=True)
class NDCG(Metric):
    r"""Normalised discounted cumulative gain (trec_eval ``ndcg_cut``).

    .. math::

        \mathrm{DCG@k} = \sum_{i=1}^{\min(k, n)} \frac{g(d_i)}{\log_2(i + 1)},
        \qquad
        \mathrm{NDCG@k} = \frac{\mathrm{DCG@k}}{\mathrm{IDCG@k}}

    where :math:`d_i` is the item at rank :math:`i`, :math:`g` its gain (1 for a
    relevant item with binary relevance, the mapped value with graded relevance, 0
    otherwise), and IDCG@k the DCG@k of the ideal ranking: all relevant items, by
    decreasing gain, whether or not they were ranked. Linear gains, as trec_eval.
    """

    key: ClassVar[str] = "ndcg"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        dcg = sum(
            gains[item] / math.log2(i + 1) for i, item in enumerate(top, start=1) if item in gains
        )
        ideal = sorted(gains.values(), reverse=True)
        if self.k is not None:
            ideal = ideal[: self.k]
        idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
        return dcg / idcg

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        result: FloatArray = 1.0 / np.log2(ranks + 1.0)
        return result


@dataclass(frozen=True, slots=True)
class Recall(Metric):
    r"""Fraction of the relevant items ranked in the top ``k`` (trec_eval ``recall``).

    .. math::

        \mathrm{Recall@k} = \frac{|\{\text{relevant items in the top } k\}|}
                                 {|\{\text{relevant items}\}|}
    """

    key: ClassVar[str] = "recall"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        return _count_hits(top, gains) / len(gains)

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        return np.ones_like(ranks)


@dataclass(frozen=True, slots=True)
class HitRate(Metric):
    r"""Whether any relevant item is ranked in the top ``k``.

    .. math::

        \mathrm{Hit@k} = \mathbb{1}\left[\,|\{\text{relevant items in the top } k\}|
                         > 0\,\right]

    Averaged over users this is the hit rate. With one relevant item per user it
    equals Recall@k.
    """

    key: ClassVar[str] = "hit"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        return 1.0 if any(item in gains for item in top) else 0.0

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        return np.ones_like(ranks)


@dataclass(frozen=True, slots=True)
class MRR(Metric):
    r"""Reciprocal rank of the first relevant item in the top ``k`` (``recip_rank``).

    Equal to trec_eval's ``recip_rank`` on the ranked list cut at ``k``.

    .. math::

        \mathrm{RR@k} = \begin{cases}
            1 / r & \text{if the first relevant item is at rank } r \le k \\
            0 & \text{otherwise}
        \end{cases}

    Averaged over users this is the mean reciprocal rank.
    """

    key: ClassVar[str] = "mrr"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        for i, item in enumerate(top, start=1):
            if item in gains:
                return 1.0 / i
        return 0.0

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        result: FloatArray = 1.0 / ranks
        return result


@dataclass(frozen=True, slots=True)
class Precision(Metric):
    r"""Fraction of the top ``k`` positions holding a relevant item (trec_eval ``P``).

    .. math::

        \mathrm{P@k} = \frac{|\{\text{relevant items in the top } k\}|}{k}

    The denominator is ``k`` even when fewer than ``k`` items were ranked, as in
    trec_eval. Without a cutoff the denominator is the length of the ranked list (0.0
    for an empty list); :meth:`from_ranks` then raises, since it does not know the
    list length.
    """

    key: ClassVar[str] = "precision"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        length = len(top) if self.k is None else self.k
        return _count_hits(top, gains) / length if length else 0.0

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        if self.k is None:
            raise ValueError(
                "Precision without a cutoff depends on each list's length, which "
                "from_ranks does not know; use a cutoff such as Precision(k=10) "
                "('precision@10') or score each list with compute()"
            )
        return np.full_like(ranks, 1.0 / self.k)


@dataclass(frozen=True, slots=True)
class AveragePrecision(Metric):
    r"""Average precision at ``k`` (trec_eval ``map_cut``).

    .. math::

        \mathrm{AP@k} = \frac{1}{|R|} \sum_{\substack{r \le k \\ d_r \in R}}
                        \mathrm{P@r}

    where :math:`R` is the relevant set and :math:`d_r` the item at rank :math:`r`.
    The normaliser is :math:`|R|`, as in trec_eval's ``map_cut``, not
    :math:`\min(|R|, k)`: AP@k is below 1 whenever more than ``k`` items are relevant.
    Averaged over users this is MAP@k.
    """

    key: ClassVar[str] = "map"

    def _score(self, top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> float:
        hits = 0
        total = 0.0
        for i, item in enumerate(top, start=1):
            if item in gains:
                hits += 1
                total += hits / i
        return total / len(gains)

    def _single_target(self, ranks: FloatArray) -> FloatArray:
        result: FloatArray = 1.0 / ranks
        return result


_METRICS: Final[Mapping[str, type[Metric]]] = {
    cls.key: cls for cls in (HitRate, AveragePrecision, MRR, NDCG, Precision, Recall)
}
_ALIASES: Final[Mapping[str, str]] = {"hr": "hit", "hit_rate": "hit"}
_ALLOWED: Final[str] = ", ".join(sorted(_METRICS))
_CUTOFF = re.compile(r"[0-9]+")


def parse_metric(spec: str) -> Metric:
    """Read a metric from a string such as ``"ndcg@10"``.

    The name is case-insensitive and surrounding whitespace is ignored. Names:
    ``ndcg``, ``recall``, ``hit`` (also ``hr`` and ``hit_rate``), ``mrr``,
    ``precision``, ``map``. The cutoff after ``@`` is a positive integer; leave it
    out (``"mrr"``) for no cutoff.

    Args:
        spec: The metric, e.g. ``"ndcg@10"``, ``"Recall@20"`` or ``"mrr"``.

    Returns:
        The metric object.

    Raises:
        ConfigError: If the name is not known or the cutoff is not a positive integer;
            the message names the value received, the allowed names and an example.
    """
    if not isinstance(spec, str):
        raise ConfigError(
            f"metric must be a string such as 'ndcg@10', got {spec!r} of type "
            f"{type(spec).__name__}; allowed names: {_ALLOWED}"
        )
    text = spec.strip().lower()
    name, sep, cutoff = text.partition("@")
    name = name.strip()
    cutoff = cutoff.strip()
    key = _ALIASES.get(name, name)
    if key not in _METRICS:
        suggestion = _suggest(name, cutoff if sep else "")
        raise ConfigError(
            f"metric {spec!r} is not known; allowed: {_ALLOWED}; write it as {suggestion!r}"
        )
    cls = _METRICS[key]
    if not sep:
        return cls(None)
    if not _CUTOFF.fullmatch(cutoff) or int(cutoff) < 1:
        raise ConfigError(
            f"metric {spec!r} has cutoff {cutoff!r}, which is not a positive integer; "
            f"write it as '{key}@10', or '{key}' for no cutoff"
        )
    return cls(int(cutoff))


def parse_metrics(specs: Iterable[str]) -> tuple[Metric, ...]:
    """Read several metrics with :func:`parse_metric`, rejecting duplicates.

    Args:
        specs: Metric strings, e.g. ``["ndcg@10", "recall@20", "mrr"]``.

    Returns:
        The metrics, in the order given.

    Raises:
        ConfigError: If a string is not a valid metric, ``specs`` is a single string,
            or two strings name the same metric (``"hit@10"`` and ``"hr@10"`` too).
    """
    if isinstance(specs, str):
        raise ConfigError(
            f"metrics must be a list of strings, got the single string {specs!r}; "
            f"write it as [{specs!r}]"
        )
    seen: dict[Metric, str] = {}
    for spec in specs:
        metric = parse_metric(spec)
        if metric in seen:
            raise ConfigError(
                f"metric {spec!r} repeats {seen[metric]!r} (both are {metric.name}); "
                "list each metric once"
            )
        seen[metric] = spec
    return tuple(seen)


def _suggest(name: str, cutoff: str) -> str:
    """An example spec close to an unknown metric name."""
    candidates = [*_METRICS, *_ALIASES]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    key = _ALIASES.get(close[0], close[0]) if close else "ndcg"
    if _CUTOFF.fullmatch(cutoff) and int(cutoff) >= 1:
        return f"{key}@{int(cutoff)}"
    return f"{key}@10"


def _count_hits(top: tuple[Hashable, ...], gains: Mapping[Hashable, float]) -> int:
    return sum(1 for item in top if item in gains)


def _check_ranked(ranked: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """The ranked ids as a tuple, after checking they are unique."""
    if isinstance(ranked, str | bytes):
        raise TypeError(
            f"ranked must be a sequence of item ids, got the string {ranked!r}; "
            f"write it as [{ranked!r}]"
        )
    items = tuple(ranked)
    seen: dict[Hashable, int] = {}
    for i, item in enumerate(items, start=1):
        first = seen.setdefault(item, i)
        if first != i:
            raise ValueError(
                f"ranked repeats item id {item!r} (at ranks {first} and {i}); "
                "each item must appear once: drop the later copies"
            )
    return items


def _relevance_gains(
    relevant: Collection[Hashable] | Mapping[Hashable, float],
) -> dict[Hashable, float]:
    """Positive gains of the relevant items (1.0 each for a plain collection)."""
    if isinstance(relevant, str | bytes):
        raise TypeError(
            f"relevant must be a collection of item ids or a mapping from id to gain, "
            f"got the string {relevant!r}; write it as {{{relevant!r}}}"
        )
    if not isinstance(relevant, Mapping):
        return dict.fromkeys(relevant, 1.0)
    gains: dict[Hashable, float] = {}
    for item, value in relevant.items():
        try:
            gain = float(value)
        except (TypeError, ValueError):
            gain = math.nan
        if not math.isfinite(gain):
            raise ValueError(
                f"relevant gives item {item!r} the gain {value!r}; gains must be finite "
                "numbers (above 0 for relevant items, 0 or below for non-relevant ones)"
            )
        if gain > 0:
            gains[item] = gain
    return gains


def _check_ranks(ranks: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The ranks as an int64 array, after checking they are integers >= 1."""
    arr = np.asarray(ranks)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"ranks must be an integer array of 1-based ranks, got dtype {arr.dtype}; "
            "convert it with np.asarray(ranks, dtype=np.int64), using UNRANKED for "
            "items that were not ranked"
        )
    flat = arr.reshape(-1)
    bad = np.flatnonzero(flat < 1)
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"ranks must be 1-based ranks >= 1, got {flat[first]} at flat index {first} "
            f"({bad.size} bad in all); the top item has rank 1, and an item that was "
            f"not ranked should get UNRANKED ({UNRANKED}) rather than 0 or -1"
        )
    if arr.dtype == np.uint64:
        # uint64 is the one integer type int64 cannot hold; anything that large is unranked.
        arr = np.minimum(arr, np.uint64(UNRANKED))
    return arr.astype(np.int64)
