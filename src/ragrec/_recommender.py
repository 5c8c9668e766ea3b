"""The public facade: build, recommend, take feedback, forget, save and load."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ragrec._recommender_config import LearningConfig, RecommenderConfig
from ragrec._version import __version__
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError, DataValidationError, RagrecError, describe_validation_error
from ragrec.feedback import (
    ChannelCredit,
    FeedbackEvent,
    FieldIssue,
    InvalidFeedbackError,
    ItemProvenance,
    RecommendationRecord,
    ServedItem,
    SQLiteFeedbackStore,
    WeightLearner,
    event_reward,
    open_store,
)
from ragrec.generation import (
    Explainer,
    ExplainItem,
    ExplanationResult,
    Generator,
    LLMScores,
    TitleIndex,
    VerbalizerRanker,
    blend_scores,
    make_generator,
)
from ragrec.prompting import (
    LABELS,
    Exemplar,
    ExemplarPool,
    Message,
    PromptBuilder,
    RenderedPrompt,
)
from ragrec.retrieval import (
    Candidate,
    ChannelWeights,
    Filters,
    FusionFit,
    FusionFitConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    StaleRetrieverStateError,
    apply_fusion,
    fit_fusion,
    holdout_last,
)
from ragrec.tuning import TuneConfig, TuneProgress, TuneResult

logger = logging.getLogger(__name__)

__all__ = [
    "LearningConfig",
    "Recommendation",
    "RecommendedItem",
    "Recommender",
    "RecommenderConfig",
]

STORE_FORMAT = 1
"""Version of the store directory layout this ragrec writes and reads."""

POSITIVE = frozenset({"click", "like", "purchase"})
NEGATIVE = frozenset({"dislike"})


@dataclass(frozen=True)
class RecommendedItem:
    """One recommended item.

    Attributes:
        item_id: Catalog id.
        title: Title.
        rank: 1-based.
        score: Final score (the blend; retrieval score when the LLM did not rank).
        retrieval_score: Fused retrieval score.
        llm_logprob: Label log-probability from the LLM (None when it did not rank).
        label: The label it had in the prompt (None without a prompt).
        channels: ``(channel, rank within channel, channel score)`` for every channel
            that proposed it.
        explanation: Its explanation (None when not explained).
    """

    item_id: Any
    title: str
    rank: int
    score: float
    retrieval_score: float
    llm_logprob: float | None
    label: str | None
    channels: tuple[tuple[str, int, float], ...]
    explanation: ExplanationResult | None = None


@dataclass(frozen=True)
class Recommendation:
    """A typed recommendation result.

    Attributes:
        id: Recommendation id (feedback events refer to it).
        user_id: The user.
        items: Best first.
        query: The free-text request, if any.
        weights: Channel weights used.
        prompt_id: Template id of the ranking prompt (None when no prompt was built).
        prompt_hash: Hash of the exact prompt text.
        exemplar_ids: Few-shot exemplars in the prompt.
        model: LLM model name.
        backend: LLM backend.
        blend_weight: Share of the LLM in the final score.
        llm_ranked: True when the LLM's scores entered the ranking.
        timings: Seconds by stage.
        degraded: True when an LLM stage failed: ranking (the retrieval order is used)
            or explaining (the explanations are missing or flagged).
        reason: Why it degraded.
        cold_start: True when the user had no history.
        llm_note: Why the LLM did not rank, and how to turn it on (None when it ranked).
    """

    id: str
    user_id: Any
    items: tuple[RecommendedItem, ...]
    query: str | None
    weights: Mapping[str, float]
    prompt_id: str | None
    prompt_hash: str | None
    exemplar_ids: tuple[str, ...]
    model: str
    backend: str
    blend_weight: float
    llm_ranked: bool
    timings: Mapping[str, float]
    degraded: bool = False
    reason: str | None = None
    cold_start: bool = False
    llm_note: str | None = None

    @property
    def item_ids(self) -> list[Any]:
        """Recommended item ids, best first."""
        return [i.item_id for i in self.items]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["weights"] = dict(self.weights)
        out["timings"] = dict(self.timings)
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class _Profile:
    """What feedback changed in a user's state since the build (the latest event about
    an item wins: a like after a dislike unblocks it, a dislike after a like removes it
    from the history)."""

    added: list[int] = field(default_factory=list)  # catalog positions, in event order
    blocked: set[int] = field(default_factory=set)

    def apply(self, position: int, *, positive: bool, negative: bool) -> None:
        if positive:
            if position not in self.added:
                self.added.append(position)
            self.blocked.discard(position)
        if negative:
            self.blocked.add(position)
            if position in self.added:
                self.added.remove(position)


class _SharedPoolRanker(VerbalizerRanker):
    """The verbalizer ranker with exemplar selection under the recommender's lock, so a
    concurrent feedback event cannot change the pool while a request selects from it
    (the forward pass itself runs outside the lock)."""

    def __init__(self, *args: Any, lock: threading.RLock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool_lock = lock

    def shots(
        self, *, user_key: Any, history: Sequence[tuple[Any, str]]
    ) -> list[tuple[str, tuple[Message, Message]]]:
        with self._pool_lock:
            return super().shots(user_key=user_key, history=history)


class Recommender:
    """Retrieval, LLM re-ranking with explanations, and a durable feedback loop.

    Build one with :meth:`build` (or :meth:`load` a saved store). ``recommend`` is safe to
    call from several threads, also while feedback arrives: each request reads one
    consistent snapshot of the catalog, channels, weights and profiles; feedback, catalog
    changes, ``forget_user`` and ``save`` are serialised.
    """

    def __init__(
        self,
        config: RecommenderConfig,
        catalog: Catalog,
        interactions: Interactions,
        *,
        path: Path | None = None,
        generator: Generator | None = None,
        weights: ChannelWeights | None = None,
        pool: ExemplarPool | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.catalog = catalog
        self.interactions = interactions
        self.retriever = (
            retriever
            if retriever is not None
            else Retriever(_retriever_config(config, path)).fit(catalog, interactions)
        )
        if weights is not None:
            self.retriever.weights = weights
        self._generator = generator
        self._ranker: VerbalizerRanker | None = None
        self._explainer: Explainer | None = None
        self._title_index: tuple[Catalog, TitleIndex] | None = None
        # exemplar selection embeds histories with the retriever's (cached) model when the
        # retriever has loaded one, instead of loading a second copy
        shared = self.retriever.embedder if self.retriever.embeddings is not None else None
        self.pool = pool if pool is not None else ExemplarPool(config.exemplars, embedder=shared)
        self.learner = WeightLearner(config.learning.weights)
        self._profiles: dict[Any, _Profile] = {}
        self._lock = threading.RLock()
        # builds the LLM components once, also when the first requests arrive together
        self._lazy_lock = threading.RLock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.store = open_store(self._store_location())
        self._replay()

    # construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        interactions: Interactions,
        config: RecommenderConfig | Mapping[str, Any] | None = None,
        *,
        path: str | Path | None = None,
        generator: Generator | None = None,
    ) -> Recommender:
        """Embed and index the catalog, fit the channels, seed the exemplar pool.

        Args:
            catalog: Items.
            interactions: Past interactions (histories and channel training data).
            config: A :class:`RecommenderConfig` or its dict form.
            path: Store directory to save into (created; the feedback database lives
                there from the start). None: in memory until :meth:`save`.
            generator: An LLM backend to share (default: built from the config).

        Raises:
            ConfigError: Invalid config, or ``path`` holds another store or is a file.
        """
        cfg = _parse_config(config)
        folder = None
        if path is not None:
            folder = Path(path)
            if (folder / "manifest.json").exists():
                raise ConfigError(
                    f"path={str(folder)!r} already holds a ragrec store; load it with "
                    "Recommender.load, or choose another folder"
                )
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"path={str(folder)!r} is a file; pass a folder for the store")
            folder.mkdir(parents=True, exist_ok=True)
        rec = cls(cfg, catalog, interactions, path=folder, generator=generator)
        if cfg.exemplars.k > 0 and len(rec.pool) == 0:
            rec.pool.seed_from_training(catalog, interactions)
        if folder is not None:
            rec.save(folder)
        return rec

    def _store_location(self) -> str:
        if self.config.feedback_url:
            return self.config.feedback_url
        if self.path is not None:
            return str(self.path / "feedback.sqlite")
        # not saved yet: a private temporary database, moved into the store on save()
        self._tmp = tempfile.TemporaryDirectory(prefix="ragrec-feedback-")
        return str(Path(self._tmp.name) / "feedback.sqlite")

    def close(self) -> None:
        """Close the feedback store (and delete the temporary one of a recommender that
        was never saved). Safe to call twice."""
        with self._lock:
            self.store.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    @property
    def generator(self) -> Generator:
        """The LLM backend (built on first use)."""
        if self._generator is None:
            with self._lazy_lock:
                if self._generator is None:
                    self._generator = make_generator(self.config.generator)
        return self._generator

    @property
    def ranker(self) -> VerbalizerRanker:
        """Prompt rendering and verbalizer scoring."""
        if self._ranker is None:
            with self._lazy_lock:
                if self._ranker is None:
                    builder = PromptBuilder(self.generator.tokenizer, self.config.prompt)
                    self._ranker = _SharedPoolRanker(
                        self.generator,
                        builder,
                        self.config.rerank,
                        exemplars=self.pool,
                        lock=self._lock,
                    )
        return self._ranker

    @property
    def explainer(self) -> Explainer:
        """Writes explanations."""
        if self._explainer is None:
            with self._lazy_lock:
                if self._explainer is None:
                    self._explainer = Explainer(self.generator, self.config.explain)
        return self._explainer

    # state --------------------------------------------------------------------------------

    def _position(self, item_id: Any, field_name: str = "item_id") -> int:
        pos = self.catalog.positions([item_id])
        if pos[0] < 0:
            raise DataValidationError(
                "request",
                f"{field_name} {item_id!r} is not in the catalog ({len(self.catalog)} items)",
                fix="use an id from the catalog, or add_items() first",
            )
        return int(pos[0])

    def _query(self, user_id: Any, text: str | None) -> RetrievalQuery:
        """The user's query: built history, then positive feedback (call under the lock)."""
        base = self.retriever.query(user_id, text=text)
        profile = self._profiles.get(user_id)
        if profile is None or not profile.added:
            return base
        seen = set(base.history.tolist())
        added = np.asarray([p for p in profile.added if p not in seen], dtype=np.int64)
        if not len(added):
            return base
        ratings = None
        if base.ratings is not None:
            # A liked item counts like the user's best-rated one. Never NaN: channels
            # centre ratings on their mean, and one NaN silences them for the user.
            known = base.ratings[np.isfinite(base.ratings)]
            fill = float(known.max()) if len(known) else 1.0
            ratings = np.concatenate([base.ratings, np.full(len(added), fill)])
        return RetrievalQuery(user_id, np.concatenate([base.history, added]), ratings, text)

    def history(self, user_id: Any) -> list[tuple[Any, str]]:
        """The user's history as ``(item id, title)``, oldest first (built data, then
        positive feedback)."""
        with self._lock:
            query = self._query(user_id, None)
            catalog = self.catalog
        return [(_plain_value(catalog.item_ids[p]), str(catalog.titles[p])) for p in query.history]

    def weights(self, user_id: Any = None) -> dict[str, float]:
        """Channel weights that apply to a user (None: the global prior)."""
        return self.retriever.weights.for_user(user_id)

    def known_user(self, user_id: Any) -> bool:
        """True when the user has any history."""
        with self._lock:
            return len(self._query(user_id, None).history) > 0

    # recommending -------------------------------------------------------------------------

    def recommend(
        self,
        user_id: Any,
        *,
        k: int = 10,
        query: str | None = None,
        explain: bool = True,
        filters: Filters | None = None,
    ) -> Recommendation:
        """Recommend ``k`` items to a user.

        Unknown users and empty histories get cold-start recommendations (popularity and,
        with a query, semantic matches), flagged ``cold_start``. LLM failures degrade to
        the retrieval order with ``degraded=True`` and the reason; they never raise.

        Raises:
            ConfigError: ``k`` is not an integer >= 1, or ``filters`` is not a Filters.
        """
        return self.recommend_batch([user_id], k=k, query=query, explain=explain, filters=filters)[
            0
        ]

    def recommend_batch(
        self,
        user_ids: Sequence[Any],
        *,
        k: int = 10,
        query: str | None = None,
        explain: bool = False,
        filters: Filters | None = None,
    ) -> list[Recommendation]:
        """:meth:`recommend` for several users (LLM scoring batched).

        Timings per recommendation: ``retrieval`` its own, ``llm_rank`` the batch's
        scoring time divided by the batch size, ``explain`` its own, ``total`` their sum
        plus assembling the result.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k={k!r}: pass the number of items wanted, an integer >= 1")
        k = int(k)
        if filters is not None and not isinstance(filters, Filters):
            raise ConfigError(
                f"filters={filters!r}: pass a ragrec.retrieval.Filters (or None), e.g. "
                "Filters(genres_any=['Comedy'])"
            )
        users = list(user_ids)
        if not users:
            return []
        cfg = self.config
        flt = filters or Filters()
        depth = max(k, cfg.llm_candidates)
        queries: list[RetrievalQuery] = []
        results = []
        t_retrieval: list[float] = []
        with self._lock:
            # one consistent snapshot: feedback and catalog changes wait for retrieval
            catalog = self.catalog
            for user in users:
                t0 = time.perf_counter()
                q = self._query(user, query)
                profile = self._profiles.get(q.user_id)
                extra = [catalog.item_ids[p] for p in profile.blocked] if profile else []
                user_filter = (
                    flt.model_copy(update={"exclude_ids": [*flt.exclude_ids, *extra]})
                    if extra
                    else flt
                )
                weights = None
                if query and cfg.query_boost:
                    # a request is about the text: its channels weigh more for this call
                    base = self.retriever.weights.for_user(q.user_id)
                    boosted = {c: w * cfg.query_boost.get(c, 1.0) for c, w in base.items()}
                    weights = ChannelWeights(boosted)
                results.append(
                    self.retriever.retrieve(q, k=depth, filters=user_filter, weights=weights)
                )
                queries.append(q)
                t_retrieval.append(time.perf_counter() - t0)

        blend = cfg.rerank.blend_weight
        score = cfg.llm_candidates > 0 and (
            cfg.score_with_llm if cfg.score_with_llm is not None else blend > 0
        )
        note = None if score else self._llm_off_note()
        n = len(queries)
        prompts: list[RenderedPrompt | None] = [None] * n
        llm_scores: list[np.ndarray | None] = [None] * n
        degraded: list[str | None] = [None] * n
        t1 = time.perf_counter()
        if score:
            requests = []
            for q, res in zip(queries, results, strict=True):
                hist = [
                    (_plain_value(catalog.item_ids[p]), str(catalog.titles[p])) for p in q.history
                ]
                cands = [(c.item_id, c.title) for c in res.candidates[: cfg.llm_candidates]]
                requests.append(
                    {"user_key": q.user_id, "history": hist, "candidates": cands, "query": query}
                )
            todo = [i for i, r in enumerate(requests) if r["candidates"]]
            try:
                scored: list[LLMScores] = self.ranker.score_batch([requests[i] for i in todo])
                for i, s in zip(todo, scored, strict=True):
                    prompts[i] = s.prompts[0] if s.prompts else None
                    if s.degraded:
                        degraded[i] = s.reason
                    else:
                        llm_scores[i] = s.logprobs
            # Serving must not fail because the LLM stage did (a backend that cannot be
            # built, an unexpected error in a backend): degrade to the retrieval order.
            except Exception as exc:
                logger.warning("LLM stage failed; using the retrieval order", exc_info=True)
                for i in todo:
                    prompts[i], llm_scores[i] = None, None
                    degraded[i] = f"{type(exc).__name__}: {exc}"
        t_llm = (time.perf_counter() - t1) / n if score else 0.0

        recs = []
        for i, (q, res) in enumerate(zip(queries, results, strict=True)):
            t2 = time.perf_counter()
            order, final = self._final_order(res.scores, llm_scores[i], blend, cfg.llm_candidates)
            prompt = prompts[i]
            lp = llm_scores[i]
            items = []
            for rank, idx in enumerate(order[:k], start=1):
                c = res.candidates[idx]
                label = (
                    prompt.label_of(c.item_id)
                    if prompt is not None and c.item_id in prompt.candidate_ids
                    else None
                )
                items.append(
                    RecommendedItem(
                        item_id=c.item_id,
                        title=c.title,
                        rank=rank,
                        score=float(final[idx]),
                        retrieval_score=float(c.score),
                        llm_logprob=float(lp[idx]) if lp is not None and idx < len(lp) else None,
                        label=label,
                        channels=tuple((p.channel, p.rank, p.score) for p in c.provenance),
                    )
                )
            t3 = time.perf_counter()
            if explain and items:
                chosen = [res.candidates[idx] for idx in order[:k]]
                items = self._explain(q, items, chosen, query, catalog)
            t_explain = time.perf_counter() - t3
            rec = Recommendation(
                id=uuid.uuid4().hex,
                user_id=q.user_id,
                items=tuple(items),
                query=query,
                weights=dict(res.weights),
                prompt_id=prompt.template_id if prompt else None,
                prompt_hash=prompt.hash if prompt else None,
                exemplar_ids=prompt.exemplar_ids if prompt else (),
                model=self.config.generator.model,
                backend=self.config.generator.backend,
                blend_weight=blend if lp is not None else 0.0,
                llm_ranked=lp is not None and blend > 0,
                timings={
                    "retrieval": t_retrieval[i],
                    "llm_rank": t_llm,
                    "explain": t_explain,
                    "total": t_retrieval[i] + t_llm + (time.perf_counter() - t2),
                },
                degraded=degraded[i] is not None,
                reason=degraded[i],
                cold_start=res.cold_start,
                llm_note=note,
            )
            self._log(rec, prompt, q, catalog, res.candidates[: cfg.llm_candidates])
            recs.append(rec)
        return recs

    @staticmethod
    def _final_order(
        retrieval: np.ndarray, llm: np.ndarray | None, blend: float, n_llm: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the candidate list, best first, and the final scores.

        With LLM scores, the ``n`` candidates the LLM saw get their blend; deeper ones
        keep the retrieval order below them (shifted under the lowest blend), so the
        final scores decrease with the rank.
        """
        final = np.asarray(retrieval, dtype=np.float64).copy()
        if llm is not None and blend > 0 and len(llm):
            n = len(llm)
            head = blend_scores(final[:n], llm, blend)
            tail = final[n:]
            if len(tail):
                tail = tail - tail.max() + head.min() - 1.0
            final = np.concatenate([head, tail])
        order = np.argsort(-final, kind="stable")
        return order, final

    def _llm_off_note(self) -> str:
        """Why the LLM ranking pass does not run, and how to turn it on."""
        cfg = self.config
        if cfg.llm_candidates == 0:
            return "LLM ranking off: llm_candidates = 0 (retrieval only)"
        if cfg.score_with_llm is False:
            return "LLM ranking off: score_with_llm = false"
        return (
            f"LLM ranking off: blend weight {cfg.rerank.blend_weight:g} (fit on validation, "
            f"the LLM did not improve on retrieval; {cfg.generator.model} ranks near chance). "
            "Turn it on with a model that helps: `ragrec tune` then "
            "`ragrec eval --ranker llm` to fit rerank.blend_weight, or a stronger "
            "model/backend (generator.model, generator.backend = 'vllm' or 'openai')"
        )

    def _titles(self, catalog: Catalog) -> TitleIndex:
        """The catalog's titles, indexed for checking explanations (built once per
        catalog)."""
        cached = self._title_index
        if cached is None or cached[0] is not catalog:
            cached = (catalog, TitleIndex(catalog.titles.tolist()))
            self._title_index = cached
        return cached[1]

    def _explain(
        self,
        query: RetrievalQuery,
        items: list[RecommendedItem],
        candidates: Sequence[Candidate],
        text: str | None,
        catalog: Catalog,
    ) -> list[RecommendedItem]:
        """The items with their explanations: every item gets the sentence built from its
        retrieval evidence, the first ``explain_top`` the LLM's rewrite of it when it
        passes the checks. Never raises: a failing LLM leaves the evidence sentences."""
        with_evidence = self.retriever.evidence(query, candidates)
        asked = [ExplainItem(c.item_id, c.title, c.evidence) for c in with_evidence]
        rewrite = self.config.explain_top if self.config.explain.rewrite else 0
        explainer: Explainer | None = None
        reason = None
        if rewrite:
            try:
                explainer = self.explainer
            except Exception as exc:  # the backend cannot be built here: sentences only
                reason = f"LLM unavailable: {type(exc).__name__}: {exc}"
                logger.warning("explanation rewrites off: %s", reason)
        if explainer is None:
            explainer = Explainer(None, self.config.explain)
        results = explainer.explain(
            asked, rewrite=rewrite, titles=self._titles(catalog), query=text
        )
        if reason is not None:
            results = [replace(r, rejected=reason) for r in results]
        return [replace(it, explanation=r) for it, r in zip(items, results, strict=True)]

    def _log(
        self,
        rec: Recommendation,
        prompt: RenderedPrompt | None,
        query: RetrievalQuery,
        catalog: Catalog,
        candidates: Sequence[Candidate] = (),
    ) -> None:
        """Record what was served, so feedback can be credited to channels and turned into
        exemplars (anonymous requests, ``user_id=None``, have no one to credit)."""
        if rec.user_id is None:
            return
        context = {
            "history_ids": [catalog.item_ids[p] for p in query.history][-50:],
            # the candidates the LLM saw (or would have), under their labels: feedback
            # on them becomes a few-shot exemplar
            "candidate_ids": (
                list(prompt.candidate_ids) if prompt else [c.item_id for c in candidates]
            ),
            "labels": list(prompt.labels) if prompt else list(LABELS[: len(candidates)]),
        }
        try:
            self.store.log_recommendation(
                rec_id=rec.id,
                user_id=_plain_id(rec.user_id),
                items=[
                    ServedItem(
                        item_id=_plain_id(it.item_id),
                        score=it.score if np.isfinite(it.score) else None,
                        provenance=tuple(
                            ItemProvenance(channel=c, rank=r, score=sc) for c, r, sc in it.channels
                        ),
                    )
                    for it in rec.items
                ],
                weights=dict(rec.weights),
                prompt_hash=rec.prompt_hash,
                model=f"{rec.backend}:{rec.model}",
                timestamp=datetime.now(UTC),
                context=_jsonable(context),
            )
        except RagrecError as exc:  # serving must not fail because logging did
            logger.warning("recommendation %s not logged: %s", rec.id, exc)

    # feedback -----------------------------------------------------------------------------

    def feedback(self, event: FeedbackEvent | Mapping[str, Any]) -> dict[str, Any]:
        """Store one event durably, then let the learners react.

        The event is committed before this returns; a repeated event id is stored once
        and learned from once.

        Returns:
            What happened: ``stored`` (False for a repeat), ``event_id``, ``reward``, the
            user's ``weights`` after the update, ``exemplar`` (id added or removed, if any).

        Raises:
            InvalidFeedbackError: A malformed event, or an item not in the catalog (names
                the field; nothing is stored). A DataValidationError.
            FeedbackConflictError: The event id is stored with different content.
        """
        ev = event if isinstance(event, FeedbackEvent) else _parse_event(event)
        with self._lock:
            if self.catalog.positions([ev.item_id])[0] < 0:
                raise InvalidFeedbackError(
                    f"feedback event {ev.event_id!r}",
                    [
                        FieldIssue(
                            "item_id",
                            ev.item_id,
                            f"not in the catalog ({len(self.catalog)} items)",
                            "send events for catalog items, or add_items() first",
                        )
                    ],
                )
            stored = self.store.add(ev)
            out: dict[str, Any] = {"stored": stored, "event_id": ev.event_id}
            if not stored:
                out["weights"] = self.weights(ev.user_id)
                return out
            out.update(self._learn(ev))
        return out

    def feedback_many(
        self, events: Iterable[FeedbackEvent | Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Store several events in one transaction (all or none), then let the learners
        react to each new one, in order.

        Returns:
            Per event, what :meth:`feedback` returns for it (``stored`` is False for an
            event stored before, or earlier in the batch).

        Raises:
            InvalidFeedbackError: An event is malformed or names an item not in the
                catalog; every issue is named with the event's position (``2.item_id``)
                and nothing is stored.
            FeedbackConflictError: An event id is stored with different content; nothing
                is stored.
        """
        parsed: list[FeedbackEvent] = []
        issues: list[FieldIssue] = []
        for index, event in enumerate(events):
            try:
                parsed.append(event if isinstance(event, FeedbackEvent) else _parse_event(event))
            except InvalidFeedbackError as exc:
                issues.extend(
                    FieldIssue(f"{index}.{i.field}", i.value, i.why, i.fix) for i in exc.issues
                )
        with self._lock:
            if parsed and not issues:
                missing = self.catalog.positions([ev.item_id for ev in parsed]) < 0
                issues.extend(
                    FieldIssue(
                        f"{index}.item_id",
                        parsed[index].item_id,
                        f"not in the catalog ({len(self.catalog)} items)",
                        "send events for catalog items, or add_items() first",
                    )
                    for index in np.flatnonzero(missing).tolist()
                )
            if issues:
                raise InvalidFeedbackError("feedback batch", issues)
            stored = self.store.add_each(parsed)
            results: list[dict[str, Any]] = []
            for ev, new in zip(parsed, stored, strict=True):
                out: dict[str, Any] = {"stored": new, "event_id": ev.event_id}
                out.update(self._learn(ev) if new else {"weights": self.weights(ev.user_id)})
                results.append(out)
        return results

    def _learn(self, ev: FeedbackEvent) -> dict[str, Any]:
        cfg = self.config.learning
        kind = str(ev.kind)
        reward = event_reward(kind, ev.value)
        positive = ev.is_positive(min_rating=cfg.rating_positive)
        negative = kind in NEGATIVE
        out: dict[str, Any] = {"reward": reward}
        rec = self.store.recommendation(ev.rec_id) if ev.rec_id else None
        if rec is not None and rec.user_id != ev.user_id:
            rec = None  # an event cannot credit another user's recommendation
        if rec is not None and reward != 0.0:
            served = rec.item(ev.item_id)
            proposers = (
                [ChannelCredit(p.channel, p.rank) for p in served.provenance] if served else []
            )
            if proposers:
                self.retriever.weights = self.learner.update(
                    self.retriever.weights, ev.user_id, proposers, reward
                )
                self.store.set_weights(ev.user_id, self.retriever.weights.for_user(ev.user_id))
                self.store.set_weights(None, self.retriever.weights.for_user(None))
        out["weights"] = self.weights(ev.user_id)
        pos = self._position(ev.item_id)
        if cfg.profile and (positive or negative):
            self._profiles.setdefault(ev.user_id, _Profile()).apply(
                pos, positive=positive, negative=negative
            )
        if cfg.exemplars and rec is not None and (positive or negative):
            out["exemplar"] = self._curate(ev, rec, positive)
        return out

    def _curate(self, ev: FeedbackEvent, rec: RecommendationRecord, positive: bool) -> str | None:
        context: Mapping[str, Any] = rec.context or {}
        cand_ids = list(context.get("candidate_ids") or [])
        labels = list(context.get("labels") or [])
        if ev.item_id not in cand_ids or not labels:
            return None
        hist_ids = list(context.get("history_ids") or [])
        known = list(dict.fromkeys([*hist_ids, *cand_ids]))
        positions = self.catalog.positions(known) if known else np.empty(0, np.int64)
        titles = {
            i: str(self.catalog.titles[p])
            for i, p in zip(known, positions.tolist(), strict=True)
            if p >= 0
        }
        if any(i not in titles for i in cand_ids):
            return None  # a candidate left the catalog since: the exemplar would lie
        exemplar = Exemplar(
            user_id=ev.user_id,
            history=tuple(titles[i] for i in hist_ids if i in titles)[
                -self.config.exemplars.max_history :
            ],
            candidates=tuple(titles[i] for i in cand_ids),
            label=labels[cand_ids.index(ev.item_id)],
            source="feedback",
            history_ids=tuple(i for i in hist_ids if i in titles)[
                -self.config.exemplars.max_history :
            ],
            candidate_ids=tuple(cand_ids),
        )
        if positive:
            self.pool.add(exemplar)
            self._save_pool()
            return exemplar.id
        removed = [
            e.id
            for e in self.pool
            if e.user_id == ev.user_id and e.candidate_ids == exemplar.candidate_ids
        ]
        for eid in removed:
            self.pool.remove(eid)
        if removed:
            self._save_pool()
        return removed[0] if removed else None

    def _replay(self) -> None:
        """Rebuild profiles and channel weights from the feedback store (after load).

        The store is the durable record: every event is committed before ``feedback``
        returns, and so are the weights it moved, while ``weights.json`` is written only
        by :meth:`save`; the store's weights therefore win over the file's.
        """
        cfg = self.config.learning
        channels = set(self.retriever.weights.for_user(None))
        weights = self.retriever.weights
        prior = {c: w for c, w in self.store.get_weights(None).items() if c in channels}
        if prior:
            weights = weights.with_global({**weights.for_user(None), **prior})
        for user in self.store.users():
            own = {c: w for c, w in self.store.get_weights(user).items() if c in channels}
            if own:
                weights = weights.with_user(user, own)
            if not cfg.profile:
                continue
            profile = _Profile()
            for event in self.store.events(user):
                pos = int(self.catalog.positions([event.item_id])[0])
                if pos < 0:
                    continue  # item removed since
                profile.apply(
                    pos,
                    positive=event.is_positive(min_rating=cfg.rating_positive),
                    negative=str(event.kind) in NEGATIVE,
                )
            if profile.added or profile.blocked:
                self._profiles[user] = profile
        self.retriever.weights = weights

    # catalog changes ----------------------------------------------------------------------

    def add_items(self, items: Catalog | pd.DataFrame) -> int:
        """Add items to the catalog (embedded and indexed at once); returns how many.

        Raises:
            DataValidationError: An id already in the catalog, or malformed rows.
        """
        new = items if isinstance(items, Catalog) else Catalog.from_frame(items, source="add_items")
        if len(new) == 0:
            return 0
        with self._lock:
            clash = set(new.item_ids.tolist()) & set(self.catalog.item_ids.tolist())
            if clash:
                raise DataValidationError(
                    "add_items",
                    f"{len(clash)} item id(s) already in the catalog, e.g. "
                    f"{sorted(clash, key=str)[:3]}",
                    fix="use new ids, or remove_items() the old ones first",
                )
            self._refit(_concat_catalogs(self.catalog, new), self.interactions)
        return len(new)

    def remove_items(self, item_ids: Iterable[Any]) -> int:
        """Remove items (never recommended again; their interactions leave the channels);
        returns how many were removed.

        Raises:
            DataValidationError: An id is not in the catalog (nothing is removed).
            ConfigError: Every item would be removed.
        """
        ids = list(dict.fromkeys(_plain_value(i) for i in item_ids))
        if not ids:
            return 0
        with self._lock:
            for i in ids:
                self._position(i)
            drop = self.catalog.positions(ids)
            keep = np.setdiff1d(np.arange(len(self.catalog)), drop)
            if not len(keep):
                raise ConfigError(
                    f"remove_items would remove all {len(self.catalog)} items; a recommender "
                    "needs at least one (build a new store instead)"
                )
            catalog = self.catalog.subset(keep)
            self._refit(catalog, self.interactions.restrict_items(catalog))
        return len(ids)

    def _refit(self, catalog: Catalog, interactions: Interactions) -> None:
        """Refit the channels on new data and swap it in at once (call under the lock)."""
        old = self.catalog
        retriever = _refit_retriever(self.retriever, catalog, interactions)
        profiles = {}
        for user, profile in self._profiles.items():
            added = catalog.positions([old.item_ids[p] for p in profile.added])
            blocked = catalog.positions([old.item_ids[p] for p in profile.blocked])
            profiles[user] = _Profile(
                [int(p) for p in added if p >= 0], {int(p) for p in blocked if p >= 0}
            )
        self.retriever, self.catalog, self.interactions = retriever, catalog, interactions
        self._profiles = profiles
        if self.path is not None:
            self.save(self.path)

    # fusion -------------------------------------------------------------------------------

    def fit_fusion(self, config: FusionFitConfig | None = None) -> FusionFit:
        """Fit the retriever's channel weights and normalisation on held-out targets: each
        user's newest interaction is held out, a copy of the retriever is fit on the rest
        (every channel is fit once more), and the fusion is searched on those targets
        (:func:`ragrec.retrieval.fit_fusion`). The weights become the global prior (the
        per-user weights that feedback learnt stay on top of it) and the method the fusion
        method; both are saved with the store, the fit itself in ``fusion.json``.
        """
        rest, held = holdout_last(self.interactions)
        probe = _refit_retriever(self.retriever, self.catalog, rest)
        queries = [probe.query(u) for u in held.user_ids]
        fit = fit_fusion(probe, queries, self.catalog.positions(held.item_ids), config=config)
        with self._lock:
            apply_fusion(self.retriever, fit)
            retriever = self.config.retriever
            self.config = self.config.model_copy(
                update={
                    "retriever": retriever.model_copy(
                        update={"fusion": fit.fusion_config(retriever.fusion)}
                    )
                }
            )
            self.store.set_weights(None, self.retriever.weights.for_user(None))
        if self.path is not None:
            self.save(self.path)
            _atomic_write(self.path / "fusion.json", json.dumps(fit.as_dict(), indent=2))
        return fit

    # privacy ------------------------------------------------------------------------------

    # tuning -------------------------------------------------------------------------------

    def tune(
        self,
        config: TuneConfig | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        from_latest: bool = False,
        resume: bool = False,
        progress: Callable[[TuneProgress], None] | None = None,
    ) -> TuneResult:
        """Fine-tune the ranking model on this store's interaction logs and feedback.

        Examples: each training user's sequence, sliding (the true next item among the
        retriever's candidates for the history before it, shuffled), plus feedback
        events (liked items as answers, disliked ones as unlikelihood terms). The run is
        saved under ``STORE/tuned/<run_id>/`` (adapter or model, ``tune.json``,
        ``loss.json``, a resumable checkpoint). The store keeps using its configured
        model: point ``generator.adapter`` (lora) or ``generator.model`` (full) at the
        result (:meth:`TuneResult.generator_config`) to rank with it.

        Args:
            config: A :class:`~ragrec.tuning.TuneConfig` or its dict form.
            run_id: Folder name under ``tuned/`` (default: UTC time and method).
            from_latest: Start from the latest run under ``tuned/`` (its adapter, or its
                full model) instead of the configured base model: incremental tuning.
            resume: Continue the interrupted run ``run_id`` from its last checkpoint.
            progress: Called at every log point with the step, examples and loss.

        Raises:
            ConfigError: The recommender has no store folder, bad config, no training
                users, ``resume`` without ``run_id``, or ``from_latest`` without a run.
        """
        from ragrec.tuning import FeedbackSignal, Tuner, build_examples, holdout_rows, latest_run
        from ragrec.tuning import parse_tune_config as parse

        cfg = parse(config)
        if self.path is None:
            raise ConfigError(
                "tune() saves into the store folder: save() the recommender (or build it "
                "with path=...) first"
            )
        if resume and run_id is None:
            raise ConfigError("resume=True needs run_id: the run folder under tuned/ to continue")
        root = self.path / "tuned"
        base = self.config.generator
        if from_latest:
            last = latest_run(root)
            if last is None:
                raise ConfigError(
                    f"from_latest=True but {root} holds no finished run; tune once without it"
                )
            info = json.loads((last / "tune.json").read_text())
            if info["method"] == "lora" and cfg.method == "lora":
                base = base.model_copy(
                    update={
                        "model": info["base_model"],
                        "gguf_file": info["base_gguf_file"],
                        "adapter": info["model_path"],
                    }
                )
            elif info["method"] == "full":
                base = base.model_copy(
                    update={"model": info["model_path"], "gguf_file": None, "adapter": None}
                )
            else:
                raise ConfigError(
                    f"from_latest=True: the latest run {last.name} is a LoRA adapter and "
                    f"method={cfg.method!r}; merge it first or tune with method='lora'"
                )
        run_id = run_id or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{cfg.method}"
        with self._lock:
            catalog, interactions = self.catalog, self.interactions
            retriever = self.retriever
            events = self.store.events() if cfg.feedback else []
        signals = [
            FeedbackSignal(
                e.user_id,
                e.item_id,
                e.is_positive(min_rating=self.config.learning.rating_positive),
            )
            for e in sorted(events, key=lambda e: e.timestamp)
            if e.is_positive(min_rating=self.config.learning.rating_positive)
            or str(e.kind) in NEGATIVE
        ]

        if cfg.holdout_last and not resume:
            # a ranking that has not seen the held-out targets
            rows = holdout_rows(catalog, interactions, cfg.holdout_last)
            retriever = _refit_retriever(retriever, catalog, rows)

        def candidates(user: Any, history: np.ndarray, k: int) -> list[int]:
            result = retriever.retrieve(RetrievalQuery(user, history), k=k)
            return [int(p) for p in result.positions]

        examples = (
            []
            if resume
            else build_examples(
                catalog, interactions, candidates=candidates, config=cfg, feedback=signals
            )
        )
        return Tuner(cfg, base=base).fit(
            examples, catalog, root / run_id, resume=resume, progress=progress
        )

    def forget_user(self, user_id: Any) -> dict[str, int]:
        """Delete everything held about a user: feedback events, logged recommendations,
        per-user weights, profile, exemplars built from their data, and their training
        interactions (the channels are refit without them). A saved store is rewritten,
        and a SQLite feedback database is compacted so no deleted row lingers in the file.

        The global channel prior keeps what the user's feedback contributed to it (an
        aggregate, with no id).

        Tuning runs (``tuned/``) lose the user's training examples; their weights keep
        what they learnt (``tuned_runs`` counts them): tune again to drop it.

        Returns:
            Counts removed per kind: ``events``, ``recommendations``, ``user_weights``,
            ``profiles`` (store rows), ``exemplars``, ``profile``, ``interactions``,
            ``tuning_examples``, and ``tuned_runs`` (runs that had trained on the user).

        Raises:
            ConfigError: ``user_id`` is neither an integer nor text.
        """
        key = _user_id(user_id)
        with self._lock:
            counts = dict(self.store.forget_user(key))
            counts["exemplars"] = self.pool.forget_user(key)
            self.retriever.weights = self.retriever.weights.without_user(key)
            counts["profile"] = int(self._profiles.pop(key, None) is not None)
            mask = _rows_of(self.interactions.user_ids, key)
            counts["interactions"] = int(mask.sum())
            if counts["interactions"]:
                self._refit(self.catalog, self.interactions.select(np.flatnonzero(~mask)))
            elif self.path is not None:
                self.save(self.path)
            counts["tuning_examples"], counts["tuned_runs"] = self._forget_tuning(key)
            if isinstance(self.store, SQLiteFeedbackStore):
                _compact_sqlite(self.store.path)
        logger.info("forgot a user: %s", counts)
        return counts

    def _forget_tuning(self, key: Any) -> tuple[int, int]:
        """Remove the user's examples from every tuning run's ``examples.json``; returns
        (examples removed, runs that had trained on them). The weights of those runs are
        not un-trained: tune again without ``from_latest`` to drop the user's influence."""
        removed = runs = 0
        root = self.path / "tuned" if self.path is not None else None
        if root is None or not root.is_dir():
            return 0, 0
        for file in sorted(root.glob("*/examples.json")):
            saved = json.loads(file.read_text(encoding="utf-8"))
            kept = [e for e in saved if e.get("user_id") != key]
            if len(kept) != len(saved):
                removed += len(saved) - len(kept)
                runs += 1
                _atomic_write(file, json.dumps(kept))
        if runs:
            logger.warning(
                "%d tuned run(s) were trained on a forgotten user's data; their examples are "
                "gone, their weights keep what was learnt: tune again without from_latest",
                runs,
            )
        return removed, runs

    # persistence --------------------------------------------------------------------------

    def _save_pool(self) -> None:
        if self.path is not None:
            self.pool.save(self.path / "exemplars.json")

    def save(self, path: str | Path) -> Path:
        """Write the store directory: manifest, config, catalog, interactions, channel
        weights, exemplar pool; the feedback database and the embedding cache already
        live there when the recommender was built or loaded with this path, else the
        database is copied there and used from then on.

        Raises:
            ConfigError: ``path`` holds another ragrec store (it is never overwritten).
        """
        folder = Path(path)
        with self._lock:
            same = self.path is not None and _same_path(self.path, folder)
            if not same and (folder / "manifest.json").exists():
                raise ConfigError(
                    f"path={str(folder)!r} holds another ragrec store; save into a new "
                    "folder, or delete that store first"
                )
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / "config.json", self.config.model_dump_json(indent=2))
            _write_frame(folder / "catalog.parquet", _catalog_frame(self.catalog))
            _write_frame(folder / "interactions.parquet", self.interactions.to_frame())
            _atomic_write(folder / "weights.json", self.retriever.weights.to_json())
            self.pool.save(folder / "exemplars.json")
            self.retriever.save(folder / "retrieval")
            if self.config.feedback_url is None and not same:
                # the database moves with the store: copy it (consistent, via SQLite's backup)
                source = Path(self.store.location)
                self.store.close()
                _copy_sqlite(source, folder / "feedback.sqlite")
                self.store = open_store(str(folder / "feedback.sqlite"))
                if self._tmp is not None:
                    # the private copy held every user's events: it must not outlive the move
                    self._tmp.cleanup()
                    self._tmp = None
            self.path = folder
            manifest = {
                "format": STORE_FORMAT,
                "ragrec": __version__,
                "saved": time.time(),
                "files": list(_STORE_FILES),
            }
            _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2))
        return folder

    @classmethod
    def load(cls, path: str | Path, *, generator: Generator | None = None) -> Recommender:
        """Open a store directory written by :meth:`save`.

        Raises:
            ConfigError: Not a store, written by a newer format than this ragrec reads,
                or a file of it is missing or damaged (names the file).
        """
        folder = Path(path)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise ConfigError(
                f"{folder} is not a ragrec store (no manifest.json); build one with "
                "`ragrec index` or Recommender.build(..., path=...)"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            fmt = manifest["format"]
            if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
                raise TypeError(f"format {fmt!r} is not a positive integer")
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ConfigError(
                f"{manifest_path} is damaged ({type(exc).__name__}: {exc}); restore the "
                "store from a backup, or rebuild it"
            ) from exc
        if fmt > STORE_FORMAT:
            raise ConfigError(
                f"{folder} was written by ragrec {manifest.get('ragrec')} (store format {fmt}); "
                f"this ragrec {__version__} reads format {STORE_FORMAT}: upgrade ragrec"
            )

        def read(name: str, parse: Any) -> Any:
            file = folder / name
            if not file.is_file():
                raise ConfigError(
                    f"{folder} is incomplete: {name} is missing; restore it from a backup, "
                    "or rebuild the store"
                )
            try:
                return parse(file)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                if isinstance(exc, RagrecError):
                    raise
                raise ConfigError(
                    f"{file} is damaged ({type(exc).__name__}: {exc}); restore it from a "
                    "backup, or rebuild the store"
                ) from exc

        config = read(
            "config.json", lambda f: _parse_config(_migrate_config(json.loads(f.read_text())))
        )
        catalog = read("catalog.parquet", lambda f: _catalog_from_frame(pd.read_parquet(f)))
        interactions = read(
            "interactions.parquet", lambda f: _interactions_from_frame(pd.read_parquet(f))
        )
        weights = read("weights.json", lambda f: ChannelWeights.from_json(f.read_text()))
        pool = read("exemplars.json", lambda f: ExemplarPool.load(f, config.exemplars))
        if config.feedback_url is None and not (folder / "feedback.sqlite").is_file():
            # a new, empty database would silently drop every stored event
            raise ConfigError(
                f"{folder} is incomplete: feedback.sqlite is missing; restore it from a "
                "backup, or rebuild the store"
            )
        try:
            retriever = Retriever.load(
                folder / "retrieval",
                _retriever_config(config, folder),
                catalog,
                interactions,
            )
        except StaleRetrieverStateError as exc:
            # an older store, or one whose files changed: fit again (slow, but correct)
            logger.info("fitting the retriever again: %s", exc)
            retriever = None
        rec = cls(
            config,
            catalog,
            interactions,
            path=folder,
            generator=generator,
            weights=weights,
            pool=pool,
            retriever=retriever,
        )
        if retriever is None:
            try:  # keep the fit, so the next load is fast
                rec.retriever.save(folder / "retrieval")
            except OSError as exc:
                logger.warning("retriever state not saved in %s: %s", folder, exc)
        return rec


_STORE_FILES = (
    "config.json",
    "catalog.parquet",
    "interactions.parquet",
    "weights.json",
    "exemplars.json",
    "feedback.sqlite",
)


def _retriever_config(config: RecommenderConfig, path: Path | None) -> RetrieverConfig:
    """The retriever's config, with the store folder as its embedding cache."""
    retriever = config.retriever
    if path is not None and retriever.cache_dir is None:
        retriever = retriever.model_copy(update={"cache_dir": str(path)})
    return retriever


def _refit_retriever(current: Retriever, catalog: Catalog, interactions: Interactions) -> Retriever:
    """A retriever like ``current`` (config, learnt channel weights) fit on new data; the
    loaded embedder is reused, so refitting never loads the model again."""
    semantic = any(c.kind == "semantic" for c in current.channels)
    retriever = Retriever(current.config, embedder=current.embedder if semantic else None)
    retriever.fit(catalog, interactions)
    retriever.weights = current.weights
    return retriever


def _parse_config(config: RecommenderConfig | Mapping[str, Any] | None) -> RecommenderConfig:
    if isinstance(config, RecommenderConfig):
        return config
    try:
        return RecommenderConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"recommender config: {describe_validation_error(exc)}; see RecommenderConfig"
        ) from exc


_RETIRED_KEYS = {"explain": ("history_items", "constrained")}
"""Config keys that older stores saved and this ragrec no longer has (explanations are
built from retrieval evidence since store format 1 of this release)."""


def _migrate_config(raw: Any) -> Any:
    """A saved config with retired keys dropped (logged), so older stores still load."""
    if not isinstance(raw, dict):
        return raw
    for section, keys in _RETIRED_KEYS.items():
        table = raw.get(section)
        if isinstance(table, dict):
            for key in keys:
                if key in table:
                    logger.info("store config: %s.%s is no longer used; ignored", section, key)
                    table.pop(key)
    return raw


def _parse_event(data: Mapping[str, Any]) -> FeedbackEvent:
    """An event from a mapping; ``event_id`` and ``timestamp`` default to a new uuid and
    now (pass both when a client may retry, so the retry is recognised)."""
    if not isinstance(data, Mapping):
        return FeedbackEvent.parse(data)  # raises, naming what was received
    fields = dict(data)
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("timestamp", datetime.now(UTC))
    return FeedbackEvent.parse(fields)


def _plain_id(value: Any) -> int | str:
    """An id as the store keeps it (numpy scalars to Python)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, int | str) else str(value)


def _plain_value(value: Any) -> Any:
    """A numpy scalar as the Python value (ids leave the facade as Python objects)."""
    return value.item() if isinstance(value, np.generic) else value


def _user_id(value: Any) -> int | str:
    """A user id to look up: an int (numpy ints too) or non-empty text."""
    plain = _plain_value(value)
    if isinstance(plain, bool) or not isinstance(plain, int | str) or plain == "":
        raise ConfigError(
            f"user_id={value!r} ({type(value).__name__}): a user id is an int or non-empty "
            "text, the id the user's interactions and feedback use (1 and '1' differ)"
        )
    return plain


def _rows_of(user_ids: np.ndarray, user: int | str) -> np.ndarray:
    """Boolean mask of the rows of ``user`` (ids compare by type: 1 is not '1')."""
    if user_ids.dtype.kind in "iu":
        if isinstance(user, str):
            return np.zeros(len(user_ids), dtype=bool)
        return np.asarray(user_ids == user, dtype=bool)
    return np.fromiter(
        (type(_plain_value(u)) is type(user) and u == user for u in user_ids),
        dtype=bool,
        count=len(user_ids),
    )


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _compact_sqlite(path: Path) -> None:
    """Rewrite a SQLite database without free pages and empty its WAL file, so rows just
    deleted leave no bytes behind (SQLite keeps old page images in the WAL until a
    checkpoint, and freed pages keep their content unless built with secure_delete)."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as exc:
        logger.warning(
            "feedback store %s: could not compact after forgetting a user (%s); the rows "
            "are deleted, but their bytes may stay in the file until VACUUM succeeds",
            path,
            exc,
        )
        return
    finally:
        conn.close()
    if busy:
        logger.warning(
            "feedback store %s: another connection is reading; the WAL file keeps old pages "
            "until the next checkpoint",
            path,
        )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _catalog_frame(catalog: Catalog) -> pd.DataFrame:
    """Every catalog field as columns (text fields prefixed ``text:``)."""
    data: dict[str, Any] = {
        "item_id": catalog.item_ids,
        "title": catalog.titles,
        "year": catalog.years,
        "categories": [list(c) for c in catalog.categories],
    }
    data.update({f"text:{k}": v for k, v in catalog.text.items()})
    return pd.DataFrame(data)


def _catalog_from_frame(frame: pd.DataFrame) -> Catalog:
    text = {
        c.split(":", 1)[1]: frame[c].to_numpy(dtype=object)
        for c in frame.columns
        if c.startswith("text:")
    }
    return Catalog(
        item_ids=frame["item_id"].to_numpy(),
        titles=frame["title"].to_numpy(dtype=object),
        text=text,
        categories=tuple(tuple(str(x) for x in c) for c in frame["categories"]),
        years=frame["year"].to_numpy(dtype=np.float64),
    )


def _interactions_from_frame(frame: pd.DataFrame) -> Interactions:
    return Interactions(
        user_ids=frame["user_id"].to_numpy(),
        item_ids=frame["item_id"].to_numpy(),
        values=frame["value"].to_numpy(dtype=np.float64),
        timestamps=frame["timestamp"].to_numpy(),
        kinds=frame["kind"].to_numpy(dtype=object),
    )


def _concat_catalogs(a: Catalog, b: Catalog) -> Catalog:
    names = list(dict.fromkeys([*a.text, *b.text]))

    def field(c: Catalog, name: str) -> np.ndarray:
        return c.text.get(name, np.full(len(c), "", dtype=object))

    ids = (
        np.concatenate([a.item_ids, b.item_ids])
        if a.item_ids.dtype.kind == b.item_ids.dtype.kind
        else np.concatenate([a.item_ids.astype(object), b.item_ids.astype(object)])
    )
    return Catalog(
        item_ids=ids,
        titles=np.concatenate([a.titles, b.titles]),
        text={n: np.concatenate([field(a, n), field(b, n)]) for n in names},
        categories=(*a.categories, *b.categories),
        years=np.concatenate([a.years, b.years]),
    )


def _copy_sqlite(source: Path, target: Path) -> None:
    import sqlite3

    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
