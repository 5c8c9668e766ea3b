"""Beyond-accuracy metrics over top-K recommendation lists: coverage, novelty, long-tail
share, intra-list diversity, and latency percentiles.

Every list metric takes ``top``, an integer array of shape ``(n_users, K)`` holding catalog
positions (``0 .. n_items - 1``), best first, with ``-1`` as padding for users who got
fewer than ``K`` items. Only the first ``k`` columns count; a ``k`` larger than ``K``
uses all ``K``. Padding slots are ignored everywhere: they are neither items nor misses.
Inputs are never modified.

Example:
    >>> import numpy as np
    >>> top = np.array([[0, 1], [1, -1]])
    >>> coverage(top, n_items=4, k=2)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from ragrec.errors import ConfigError

if TYPE_CHECKING:
    from ragrec.data import Catalog

__all__ = [
    "PAD",
    "coverage",
    "genre_features",
    "head_items",
    "intra_list_diversity",
    "latency_percentiles",
    "long_tail_share",
    "novelty",
]

PAD: Final[int] = -1
"""Catalog position that pads a top-K row holding fewer than ``K`` items."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Users per block in intra_list_diversity, so the (users, k, d) gather stays small.
_ILD_BLOCK: Final[int] = 2048


def coverage(top: npt.ArrayLike, n_items: int, k: int) -> float:
    r"""Catalog coverage: the share of catalog items in at least one user's top ``k``.

    .. math::

        \mathrm{Coverage@k} = \frac{|\bigcup_u \mathrm{top}_k(u)|}{n_\text{items}}

    Args:
        top: ``(n_users, K)`` catalog positions, ``-1`` for padding.
        n_items: Catalog size; positions must lie below it.
        k: Cutoff; columns past ``k`` are ignored (all ``K`` when ``k > K``).

    Returns:
        The share in ``[0, 1]``; 0.0 when every slot is padding or there are no users.

    Raises:
        ConfigError: If ``n_items`` or ``k`` is not a positive integer.
        ValueError: If ``top`` is not a 2-D integer array of positions in
            ``[-1, n_items)``.
    """
    n = _positive_int("n_items", n_items)
    cut = _cut(top, k, n_items=n)
    items = cut[cut != PAD]
    return float(np.unique(items).size / n)


def novelty(top: npt.ArrayLike, item_counts: npt.ArrayLike, n_train_users: int, k: int) -> float:
    r"""Mean self-information (surprisal) of the recommended items, in bits.

    .. math::

        \mathrm{Novelty@k} = \frac{1}{|U'|} \sum_{u \in U'} \frac{1}{|L_u|}
            \sum_{i \in L_u} -\log_2 \frac{\max(c_i, 1)}{n_\text{train users}}

    where :math:`L_u` is the user's top ``k`` without padding, :math:`U'` the users
    with a non-empty :math:`L_u`, and :math:`c_i` the number of training users who
    interacted with item :math:`i` (Zhou et al., 2010; Vargas & Castells, 2011). An
    item no training user saw (:math:`c_i = 0`) counts as seen once, so its
    self-information is the largest finite value, :math:`\log_2 n_\text{train users}`,
    rather than infinite.

    Args:
        top: ``(n_users, K)`` catalog positions, ``-1`` for padding.
        item_counts: ``(n_items,)`` training users per item (non-negative, at most
            ``n_train_users``).
        n_train_users: Number of training users.
        k: Cutoff.

    Returns:
        Mean novelty in bits, in ``[0, log2(n_train_users)]``; ``nan`` when every slot
        is padding.

    Raises:
        ConfigError: If ``n_train_users`` or ``k`` is not a positive integer.
        ValueError: If the arrays are malformed, a count is negative or above
            ``n_train_users``, or a position is outside ``item_counts``.
    """
    n_users = _positive_int("n_train_users", n_train_users)
    counts = _counts(item_counts)
    if counts.size and counts.max() > n_users:
        worst = int(np.argmax(counts))
        raise ValueError(
            f"item_counts[{worst}] = {counts[worst]:g} exceeds n_train_users={n_users}; "
            "item_counts must count distinct training users per item"
        )
    cut = _cut(top, k, n_items=counts.size)
    info = -np.log2(np.maximum(counts, 1.0) / n_users)
    valid = cut != PAD
    per_slot = np.where(valid, info[np.where(valid, cut, 0)], 0.0)
    return _mean_of_list_means(per_slot.sum(axis=1), valid.sum(axis=1))


def head_items(item_counts: npt.ArrayLike, *, head_share: float = 0.2) -> BoolArray:
    """The short head: the most popular items that together hold ``head_share`` of the
    training interactions (Abdollahpouri, Burke & Mobasher, 2017/2019).

    Items are sorted by decreasing count (ties by catalog position); the head is the
    shortest prefix of that order whose counts sum to at least
    ``head_share * sum(item_counts)``. Every other item, including every item with a
    zero count, is in the long tail. With no interactions at all the head is empty.

    Example: counts ``[50, 30, 10, 5, 5]`` (total 100) with ``head_share=0.2`` give a
    head of item 0 alone (50 >= 20); with ``head_share=0.6``, items 0 and 1 (80 >= 60).

    Args:
        item_counts: ``(n_items,)`` training interactions per item.
        head_share: Share of all interactions the head holds, in ``(0, 1)``.

    Returns:
        A boolean ``(n_items,)`` mask, true for head items.

    Raises:
        ConfigError: If ``head_share`` is not in ``(0, 1)``.
        ValueError: If ``item_counts`` is not a 1-D array of non-negative numbers.
    """
    share = _share(head_share)
    counts = _counts(item_counts)
    head = np.zeros(counts.size, dtype=np.bool_)
    total = float(counts.sum())
    if total <= 0:
        return head
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order])
    # A relative tolerance, so that 0.2 * 100 reaches 20 despite floating point.
    n_head = int(np.searchsorted(cumulative, share * total * (1 - 1e-12), side="left")) + 1
    head[order[: min(n_head, counts.size)]] = True
    return head


def long_tail_share(
    top: npt.ArrayLike, item_counts: npt.ArrayLike, k: int, *, head_share: float = 0.2
) -> float:
    r"""Share of the recommended slots that go to long-tail items.

    The long tail is every item outside :func:`head_items` (the most popular items that
    together hold ``head_share`` of the training interactions). The value is the
    average, over users with at least one non-padding slot, of the fraction of their top
    ``k`` in the long tail: APLT, the average percentage of long-tail items
    (Abdollahpouri et al., 2017).

    .. math::

        \mathrm{APLT@k} = \frac{1}{|U'|} \sum_{u \in U'}
            \frac{|\{i \in L_u : i \notin H\}|}{|L_u|}

    Args:
        top: ``(n_users, K)`` catalog positions, ``-1`` for padding.
        item_counts: ``(n_items,)`` training interactions per item.
        k: Cutoff.
        head_share: Share of the interactions the short head holds, in ``(0, 1)``.

    Returns:
        The share in ``[0, 1]``; ``nan`` when every slot is padding.

    Raises:
        ConfigError: If ``k`` or ``head_share`` is out of range.
        ValueError: If the arrays are malformed.
    """
    head = head_items(item_counts, head_share=head_share)
    cut = _cut(top, k, n_items=head.size)
    valid = cut != PAD
    tail = valid & ~head[np.where(valid, cut, 0)]
    return _mean_of_list_means(tail.sum(axis=1).astype(np.float64), valid.sum(axis=1))


def intra_list_diversity(top: npt.ArrayLike, features: npt.ArrayLike, k: int) -> float:
    r"""Mean pairwise cosine distance between the items of each list (ILD).

    .. math::

        \mathrm{ILD@k} = \frac{1}{|U''|} \sum_{u \in U''}
            \frac{2}{|L_u|(|L_u| - 1)} \sum_{\substack{i, j \in L_u \\ i < j}}
            \left(1 - \cos(f_i, f_j)\right)

    over the users :math:`U''` with at least two non-padding items in their top ``k``
    (a single item has no pairs). An all-zero feature row has cosine similarity 0 with
    every item (distance 1), including another all-zero row.

    Args:
        top: ``(n_users, K)`` catalog positions, ``-1`` for padding.
        features: ``(n_items, d)`` item features (e.g. :func:`genre_features`).
        k: Cutoff.

    Returns:
        Mean distance, in ``[0, 2]`` (``[0, 1]`` for non-negative features); ``nan``
        when no user has two items.

    Raises:
        ConfigError: If ``k`` is not a positive integer.
        ValueError: If ``features`` is not a finite 2-D array or ``top`` is malformed.
    """
    feats = np.asarray(features)
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
        raise ValueError(
            f"features must be a numeric 2-D array (n_items, d), got shape {feats.shape} "
            f"and dtype {feats.dtype}"
        )
    feats = feats.astype(np.float64)
    if not np.isfinite(feats).all():
        raise ValueError("features holds NaN or infinite values; item features must be finite")
    cut = _cut(top, k, n_items=feats.shape[0])
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
    totals = np.zeros(cut.shape[0], dtype=np.float64)
    sizes = (cut != PAD).sum(axis=1)
    for lo in range(0, cut.shape[0], _ILD_BLOCK):
        block = cut[lo : lo + _ILD_BLOCK]
        valid = block != PAD
        vecs = unit[np.where(valid, block, 0)] * valid[:, :, None]
        sims = np.einsum("uid,ujd->uij", vecs, vecs)
        pair = valid[:, :, None] & valid[:, None, :]
        upper = np.triu(np.ones(sims.shape[1:], dtype=np.bool_), k=1)
        totals[lo : lo + _ILD_BLOCK] = ((1.0 - sims) * (pair & upper)).sum(axis=(1, 2))
    pairs = sizes * (sizes - 1) / 2
    keep = pairs > 0
    if not keep.any():
        return math.nan
    return float(np.mean(totals[keep] / pairs[keep]))


def genre_features(catalog: Catalog, *, genres: Sequence[str] | None = None) -> FloatArray:
    """Multi-hot genre matrix of a catalog, from :attr:`Catalog.categories`.

    Args:
        catalog: The catalog; row ``i`` of the result is the item at position ``i``.
        genres: Column order. Default: every genre in the catalog, sorted. Genres of an
            item that are not listed here are left out.

    Returns:
        A float64 ``(len(catalog), len(genres))`` array with 1.0 where the item has the
        genre; items without genres get a row of zeros.

    Raises:
        ConfigError: If ``genres`` repeats a name.
    """
    if genres is None:
        columns = sorted({g for cats in catalog.categories for g in cats})
    else:
        columns = list(genres)
        if len(set(columns)) != len(columns):
            dup = sorted({g for g in columns if columns.count(g) > 1})
            raise ConfigError(f"genres repeats {dup}; list each genre once")
    index = {g: j for j, g in enumerate(columns)}
    out = np.zeros((len(catalog), len(columns)), dtype=np.float64)
    for i, cats in enumerate(catalog.categories):
        for g in cats:
            j = index.get(g)
            if j is not None:
                out[i, j] = 1.0
    return out


def latency_percentiles(
    seconds: npt.ArrayLike, percentiles: Iterable[float] = (50, 90, 95, 99)
) -> dict[str, float]:
    """Percentiles of per-request latencies, keyed ``"p50"``, ``"p90"``, ``"p99.9"``...

    Linear interpolation between order statistics (``numpy.percentile``'s default).

    Args:
        seconds: Latencies in seconds, any shape; flattened.
        percentiles: Percentiles in ``[0, 100]``.

    Returns:
        ``{"p50": ..., ...}`` in the order given.

    Raises:
        ValueError: If ``seconds`` is empty or holds a negative, NaN or infinite value,
            or a percentile is outside ``[0, 100]``.
    """
    values = np.asarray(seconds, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("seconds is empty; latency percentiles need at least one timing")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("seconds must be finite and >= 0; drop failed or missing timings first")
    qs = [float(p) for p in percentiles]
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q:g} is outside [0, 100]; write e.g. (50, 90, 99)")
    result = np.percentile(values, qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, result, strict=True)}


# --- helpers ---------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}; write e.g. {name}=10")
    return int(value)


def _share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ConfigError(f"head_share must be a number in (0, 1), got {value!r}")
    share = float(value)
    if not 0 < share < 1:
        raise ConfigError(
            f"head_share must be in (0, 1), got {share:g}; 0.2 puts the items holding "
            "the top 20% of interactions in the head"
        )
    return share


def _counts(item_counts: npt.ArrayLike) -> FloatArray:
    counts = np.asarray(item_counts)
    if counts.ndim != 1 or not (counts.size == 0 or np.issubdtype(counts.dtype, np.number)):
        raise ValueError(
            f"item_counts must be a 1-D numeric array (one count per catalog item), got "
            f"shape {counts.shape} and dtype {counts.dtype}"
        )
    out = counts.astype(np.float64)
    if not np.isfinite(out).all() or (out < 0).any():
        raise ValueError("item_counts must be finite and >= 0")
    return out


def _cut(top: npt.ArrayLike, k: int, *, n_items: int) -> IntArray:
    """The first ``k`` columns of ``top`` as int64, after checking the positions."""
    cutoff = _positive_int("k", k)
    arr = np.asarray(top)
    if arr.ndim != 2:
        raise ValueError(
            f"top must be a 2-D array (n_users, K) of catalog positions, got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"top must hold integer catalog positions (-1 for padding), got dtype {arr.dtype}"
        )
    cut = arr[:, :cutoff].astype(np.int64)
    bad = (cut < PAD) | (cut >= n_items)
    if bad.any():
        row, col = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(
            f"top[{row}, {col}] = {cut[row, col]} is not a catalog position in "
            f"[0, {n_items}) nor the padding value {PAD}"
        )
    return cut


def _mean_of_list_means(sums: FloatArray, sizes: npt.NDArray[np.integer]) -> float:
    keep = sizes > 0
    if not keep.any():
        return math.nan
    return float(np.mean(sums[keep] / sizes[keep]))
