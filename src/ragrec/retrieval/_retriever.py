"""The retriever: channels, fusion with channel weights, and filters."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.retrieval._atomic import atomic_folder
from ragrec.retrieval._channel_base import CHANNELS, Channel, ChannelContext, channel_kinds
from ragrec.retrieval._embedders import (
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    ItemTextConfig,
    make_embedder,
)
from ragrec.retrieval._fusion import ChannelWeights, Filters, FusionConfig, blocked_positions, fuse
from ragrec.retrieval._index import IndexConfig, VectorIndexError, load_index
from ragrec.retrieval._items import ItemEmbeddings, catalog_fingerprint
from ragrec.retrieval._types import (
    Candidate,
    CandidateList,
    ChannelCandidates,
    ChannelShare,
    Evidence,
    HistoryEvidence,
    RetrievalQuery,
)

logger = logging.getLogger(__name__)

__all__ = ["ChannelSpec", "Retriever", "RetrieverConfig", "StaleRetrieverStateError"]

STATE_FORMAT = 1
"""Version of the saved retriever state (``Retriever.save``)."""


class StaleRetrieverStateError(ConfigError):
    """Saved retriever state that does not match the catalog, rows or config at hand (or
    is missing or damaged): fit the retriever instead."""


class ChannelSpec(Settings):
    """One channel of a retriever."""

    kind: str = Field(description="Registered channel kind: transition, ease, semantic, ...")
    name: str | None = Field(default=None, description="Name in results (default: kind).")
    weight: float = Field(default=1.0, ge=0, description="Global prior weight in fusion.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The channel's own config (checked by its model)."
    )

    @property
    def label(self) -> str:
        """The channel's name in results."""
        return self.name or self.kind


def _default_channels() -> list[ChannelSpec]:
    # Prior weights: the fusion fit (ragrec.retrieval.fit_fusion) on the llamarec
    # validation split of ml-latest-small (benchmarks/retrieval_quality.py), rounded;
    # `ragrec fit-fusion` fits them to a store's own data.
    return [
        ChannelSpec(kind="transition", weight=1.0),
        ChannelSpec(kind="ease", weight=0.2),
        ChannelSpec(kind="sasrec", weight=0.87),
        ChannelSpec(kind="als", weight=0.86),
        ChannelSpec(kind="itemknn", weight=0.76),
        ChannelSpec(kind="semantic", weight=0.62),
        # It also orders cold-start lists, where it is the only channel with candidates.
        ChannelSpec(kind="popularity", weight=0.15),
    ]


class RetrieverConfig(Settings):
    """Configuration of :class:`Retriever`."""

    n_candidates: int = Field(default=20, ge=1, description="Candidates returned (N).")
    channels: list[ChannelSpec] = Field(
        default_factory=_default_channels, description="Channels and their prior weights."
    )
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    item_text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    cache_dir: str | None = Field(
        default=None, description="Embedding cache folder; None computes every time."
    )
    evidence_items: int = Field(
        default=3, ge=0, description="History items cited per candidate as evidence."
    )
    evidence_min_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Smallest share of a candidate's fused score a history item must carry "
        "to be cited as evidence.",
    )


def _build_channel(spec: ChannelSpec) -> Channel:
    try:
        cls = CHANNELS[spec.kind]
    except KeyError:
        raise ConfigError(
            f"channel kind {spec.kind!r} is not known; registered: {channel_kinds()}"
        ) from None
    try:
        config = cls.config_class.model_validate(spec.options)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"channel {spec.label!r} ({spec.kind}) options invalid: {bad}; allowed keys: "
            f"{', '.join(cls.config_class.model_fields)}"
        ) from exc
    return cls(config, name=spec.label)


class Retriever:
    """Proposes N candidates per user from several channels, fused with channel weights.

    Args:
        config: Channels, weights, fusion, embedder and index settings.
        embedder: An embedder to use instead of building one from ``config.embedder``
            (shares a loaded model between components).
    """

    def __init__(self, config: RetrieverConfig | None = None, *, embedder: Embedder | None = None):
        self.config = config or RetrieverConfig()
        names = [s.label for s in self.config.channels]
        if not names:
            raise ConfigError("a retriever needs at least one channel")
        if len(set(names)) != len(names):
            raise ConfigError(f"channel names must be unique; got {names} (set name=...)")
        self.channels = [_build_channel(s) for s in self.config.channels]
        self.weights = ChannelWeights({s.label: s.weight for s in self.config.channels})
        self._embedder = embedder
        self.embeddings: ItemEmbeddings | None = None
        self.catalog: Catalog | None = None
        self._histories: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def embedder(self) -> Embedder:
        """The text embedder (built on first use)."""
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedder)
        # A shared embedder is cached too: cache_dir must not be ignored silently.
        if self.config.cache_dir and not isinstance(self._embedder, CachedEmbedder):
            cache = EmbeddingCache(Path(self.config.cache_dir) / "embeddings.sqlite")
            self._embedder = CachedEmbedder(self._embedder, cache)
        return self._embedder

    def fit(self, catalog: Catalog, interactions: Interactions) -> Retriever:
        """Embed and index the catalog (when a channel needs it), and fit every channel.

        Raises:
            ConfigError: Empty catalog.
        """
        if len(catalog) == 0:
            raise ConfigError("the catalog is empty; add items before fitting a retriever")
        start = time.perf_counter()
        if any(c.kind == "semantic" for c in self.channels):
            self.embeddings = ItemEmbeddings.build(
                catalog,
                self.embedder,
                text_config=self.config.item_text,
                index_config=self.config.index,
            )
        context = ChannelContext.build(
            catalog, interactions, self.embeddings, index_config=self.config.index
        )
        for channel in self.channels:
            channel.fit(context)
        self._set_fitted(context)
        logger.info(
            "retriever fit on %d items, %d rows in %.1f s (channels: %s)",
            len(catalog),
            len(interactions),
            time.perf_counter() - start,
            ", ".join(c.name for c in self.channels),
        )
        return self

    def refit(self, catalog: Catalog, interactions: Interactions) -> Retriever:
        """A new retriever like this one (config, learnt channel weights) fit on other
        data; the loaded embedder is reused, so refitting never loads the model again.
        This retriever is left as it is."""
        semantic = any(c.kind == "semantic" for c in self.channels)
        retriever = Retriever(self.config, embedder=self.embedder if semantic else None)
        retriever.fit(catalog, interactions)
        retriever.weights = self.weights
        return retriever

    def _set_fitted(self, context: ChannelContext) -> None:
        self.catalog = context.catalog
        self._histories = {u: (seq, context.ratings[u]) for u, seq in context.sequences.items()}
        self._fingerprint = data_fingerprint(self.config, context.catalog, context.interactions)

    # persistence --------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the fitted state (item vectors and index, each channel's arrays) so that
        :meth:`load` restores it without fitting; replaced atomically.

        Raises:
            ConfigError: The retriever is not fit.
        """
        self._require_fit()
        target = Path(folder)
        with atomic_folder(target) as tmp:
            if self.embeddings is not None:
                np.save(tmp / "vectors.npy", self.embeddings.vectors)
                self.embeddings.index.save(
                    tmp / "index", catalog_fingerprint=catalog_fingerprint(self.embeddings.catalog)
                )
            saved = {}
            for channel in self.channels:
                state = channel.state()
                if state:
                    (tmp / "channels" / channel.name).mkdir(parents=True)
                    for key, array in state.items():
                        np.save(tmp / "channels" / channel.name / f"{key}.npy", array)
                    saved[channel.name] = sorted(state)
            manifest = {
                "format": STATE_FORMAT,
                "fingerprint": self._fingerprint,
                "channels": saved,
                "embedder": self.embedder.name if self.embeddings is not None else None,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return target

    @classmethod
    def load(
        cls,
        folder: str | Path,
        config: RetrieverConfig,
        catalog: Catalog,
        interactions: Interactions,
        *,
        embedder: Embedder | None = None,
    ) -> Retriever:
        """A retriever restored from :meth:`save`'s folder, for exactly this config,
        catalog and training rows (the item vectors are memory-mapped; the text embedder
        loads only when a free-text query needs it).

        Raises:
            StaleRetrieverStateError: Missing or damaged files, or state saved for another
                config, catalog or rows: fit instead.
        """
        path = Path(folder)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise StaleRetrieverStateError(f"{path}: no readable retriever state ({exc})") from exc
        if manifest.get("format") != STATE_FORMAT:
            raise StaleRetrieverStateError(f"{path}: state format {manifest.get('format')!r}")
        retriever = cls(config, embedder=embedder)
        fingerprint = data_fingerprint(retriever.config, catalog, interactions)
        if manifest.get("fingerprint") != fingerprint:
            raise StaleRetrieverStateError(f"{path}: saved for another config, catalog or rows")
        start = time.perf_counter()
        try:
            if any(c.kind == "semantic" for c in retriever.channels):
                vectors = np.load(path / "vectors.npy", mmap_mode="r")
                index = load_index(
                    path / "index",
                    expected_embedder=retriever.embedder.name,
                    catalog_fingerprint=catalog_fingerprint(catalog),
                    config=retriever.config.index,
                )
                if vectors.shape[0] != len(catalog):
                    raise StaleRetrieverStateError(f"{path}: vectors for another catalog")
                retriever.embeddings = ItemEmbeddings(
                    catalog, retriever.embedder, vectors, index, retriever.config.item_text
                )
            context = ChannelContext.build(catalog, interactions, retriever.embeddings)
            saved = manifest.get("channels", {})
            for channel in retriever.channels:
                names = saved.get(channel.name)
                if names is None:
                    channel.fit(context)
                    continue
                state = {
                    key: np.load(path / "channels" / channel.name / f"{key}.npy", mmap_mode="r")
                    for key in names
                }
                channel.load_state(context, state)
        except (OSError, ValueError, VectorIndexError) as exc:
            raise StaleRetrieverStateError(f"{path}: damaged retriever state ({exc})") from exc
        retriever._set_fitted(context)
        logger.info(
            "retriever loaded: %d items, %d rows in %.2f s",
            len(catalog),
            len(interactions),
            time.perf_counter() - start,
        )
        return retriever

    def _require_fit(self) -> Catalog:
        if self.catalog is None:
            raise ConfigError("the retriever is not fit; call fit(catalog, interactions) first")
        return self.catalog

    def query(self, user_id: Any, *, text: str | None = None) -> RetrievalQuery:
        """A query for a user from the fit data; unknown users get an empty history."""
        self._require_fit()
        history, ratings = self._histories.get(
            user_id, (np.empty(0, np.int64), np.empty(0, np.float64))
        )
        return RetrievalQuery(user_id, history, ratings, text)

    def retrieve(
        self,
        query: RetrievalQuery,
        *,
        k: int | None = None,
        filters: Filters | None = None,
        weights: ChannelWeights | None = None,
        evidence: bool = False,
    ) -> CandidateList:
        """The fused top-``k`` candidates (default ``n_candidates``) for one query; with
        ``evidence``, each candidate carries why it was proposed (:meth:`evidence`)."""
        return self.retrieve_batch(
            [query], k=k, filters=filters, weights=weights, evidence=evidence
        )[0]

    def retrieve_batch(
        self,
        queries: Sequence[RetrievalQuery],
        *,
        k: int | None = None,
        filters: Filters | None = None,
        weights: ChannelWeights | None = None,
        evidence: bool = False,
    ) -> list[CandidateList]:
        """Fused candidates for several queries (channels score the batch together)."""
        catalog = self._require_fit()
        n = self.config.n_candidates if k is None else k
        if n < 1:
            raise ConfigError(f"k={n} must be >= 1")
        flt = filters or Filters()
        wts = weights or self.weights
        start = time.perf_counter()
        blocked = [blocked_positions(catalog, flt, q.history) for q in queries]
        depth = max(self.config.fusion.depth, n)
        per_channel: list[list[ChannelCandidates]] = []
        timings: dict[str, float] = {}
        for channel in self.channels:
            t0 = time.perf_counter()
            active = [i for i, q in enumerate(queries) if not (channel.needs_history and q.cold)]
            lists = [ChannelCandidates(channel.name, np.empty(0, np.int64), np.empty(0))] * len(
                queries
            )
            if active:
                got = channel.propose(
                    [queries[i] for i in active], depth, blocked=[blocked[i] for i in active]
                )
                for i, lst in zip(active, got, strict=True):
                    lists[i] = lst
            per_channel.append(lists)
            timings[channel.name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fused = []
        for row, q in enumerate(queries):
            user_weights = wts.for_user(q.user_id)
            lists = [per_channel[c][row] for c in range(len(self.channels))]
            candidates = fuse(lists, user_weights, self.config.fusion, catalog, n)
            used = tuple(lst.channel for lst in lists if len(lst))
            fused.append((q, candidates, user_weights, used))
        timings["fusion"] = time.perf_counter() - t0
        if evidence:
            t0 = time.perf_counter()
            fused = [(q, self.evidence(q, c), w, u) for q, c, w, u in fused]
            timings["evidence"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        return [
            CandidateList(
                user_id=q.user_id,
                candidates=candidates,
                weights=user_weights,
                cold_start=q.cold,
                channels=used,
                fusion=self.config.fusion.method,
                seconds=dict(timings),
            )
            for q, candidates, user_weights, used in fused
        ]

    # evidence -----------------------------------------------------------------------------

    def evidence(
        self, query: RetrievalQuery, candidates: Sequence[Candidate]
    ) -> tuple[Candidate, ...]:
        """The candidates with their :class:`Evidence`: each proposing channel's share of
        the fused score, and the history items that raise it, each credited with its part
        of those shares (from the channels' exact score terms, or leave-one-out).
        """
        catalog = self._require_fit()
        if not candidates:
            return tuple(candidates)
        positions = np.array([c.position for c in candidates], dtype=np.int64)
        by_name = {c.name: c for c in self.channels}
        proposed = {p.channel for c in candidates for p in c.provenance}
        terms: dict[str, np.ndarray] = {}
        if not query.cold:
            for name in proposed:
                channel = by_name.get(name)
                if channel is not None and channel.needs_history_evidence:
                    terms[name] = channel.contributions(query, positions)
        cfg = self.config
        hist = query.history
        out = []
        for i, cand in enumerate(candidates):
            parts = [(p, max(p.fused, 0.0)) for p in cand.provenance]
            total = sum(v for _, v in parts)
            shares = sorted(
                (
                    ChannelShare(p.channel, by_name[p.channel].kind, v / total, p.rank)
                    for p, v in parts
                    if total > 0 and v > 0 and p.channel in by_name
                ),
                key=lambda s: -s.share,
            )
            credit = np.zeros(len(hist))
            via: dict[int, dict[str, float]] = {}
            for share in shares:
                if share.channel not in terms:
                    continue
                row = np.clip(terms[share.channel][i], 0.0, None)
                if row.sum() <= 0:
                    continue
                part = share.share * row / row.sum()
                credit += part
                for j in np.flatnonzero(part):
                    via.setdefault(int(j), {})[share.channel] = float(part[j])
            cited = [
                int(j)
                for j in np.argsort(-credit, kind="stable")[: cfg.evidence_items]
                if credit[j] >= cfg.evidence_min_share
            ]
            history = tuple(
                HistoryEvidence(
                    item_id=_plain(catalog.item_ids[hist[j]]),
                    title=str(catalog.titles[hist[j]]),
                    share=float(credit[j]),
                    channels=tuple(sorted(via[j], key=lambda c: -via[j][c])),
                )
                for j in cited
            )
            out.append(replace(cand, evidence=self._attributes(query, cand, shares, history)))
        return tuple(out)

    def _attributes(
        self,
        query: RetrievalQuery,
        cand: Candidate,
        shares: Sequence[ChannelShare],
        history: Sequence[HistoryEvidence],
    ) -> Evidence:
        """Shared genres and decade with the cited items, the query, popularity."""
        catalog = self._require_fit()
        cited = catalog.positions([h.item_id for h in history]) if history else np.empty(0, int)
        genres: tuple[str, ...] = ()
        decade = None
        if len(cited):
            theirs = {g.lower() for p in cited for g in catalog.categories[p]}
            genres = tuple(g for g in catalog.categories[cand.position] if g.lower() in theirs)
            year = catalog.years[cand.position]
            if np.isfinite(year):
                own = int(year) // 10 * 10
                years = catalog.years[cited]
                if any(np.isfinite(y) and int(y) // 10 * 10 == own for y in years):
                    decade = f"{own}s"
        kinds = {s.kind for s in shares}
        popularity = next((s.rank for s in shares if s.kind == "popularity"), None)
        return Evidence(
            channels=tuple(shares),
            history=tuple(history),
            genres=genres,
            decade=decade,
            query=query.text if query.text and "semantic" in kinds else None,
            popularity_rank=popularity,
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def data_fingerprint(config: RetrieverConfig, catalog: Catalog, interactions: Interactions) -> str:
    """A sha256 over what a fitted retriever depends on: the settings that change its
    state, the catalog's ids and titles, and every training row."""
    digest = hashlib.sha256()
    settings = config.model_dump(
        exclude={"n_candidates", "cache_dir", "evidence_items", "evidence_min_share", "fusion"}
    )
    for spec in settings["channels"]:
        spec.pop("weight", None)  # weights act at fusion, not in what is fit
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(catalog_fingerprint(catalog).encode())
    for array in (
        interactions.user_ids,
        interactions.item_ids,
        interactions.values,
        interactions.timestamps,
        interactions.kinds,
    ):
        values = np.asarray(array)
        if values.dtype.kind == "O":
            digest.update("\x1f".join(map(str, values.tolist())).encode())
        else:
            digest.update(str(values.dtype).encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
