"""The public facade: build, recommend, take feedback, forget, save and load."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragrec._version import __version__
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError, DataValidationError, RagrecError, describe_validation_error
from ragrec.feedback import (
    FeedbackEvent,
    FieldIssue,
    InvalidFeedbackError,
    ItemProvenance,
    RecommendationRecord,
    ServedItem,
    open_store,
)
from ragrec.feedback._learners import (
    ChannelCredit,
    WeightLearner,
    WeightLearnerConfig,
    event_reward,
)
from ragrec.generation import (
    ExplainConfig,
    Explainer,
    ExplanationResult,
    Generator,
    GeneratorConfig,
    RerankConfig,
    VerbalizerRanker,
    blend_scores,
    make_generator,
)
from ragrec.prompting import (
    Exemplar,
    ExemplarConfig,
    ExemplarPool,
    PromptBuilder,
    PromptConfig,
    PromptTooLongError,
    RenderedPrompt,
)
from ragrec.retrieval import ChannelWeights, Filters, RetrievalQuery, Retriever, RetrieverConfig

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


class LearningConfig(BaseModel):
    """What feedback changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: WeightLearnerConfig = Field(default_factory=WeightLearnerConfig)
    exemplars: bool = Field(
        default=True,
        description="Liked or chosen recommendations become few-shot exemplars; disliked "
        "ones are removed.",
    )
    profile: bool = Field(
        default=True,
        description="Positive events join the user's history at once (so the next request "
        "reflects them); disliked items are not recommended to the user again.",
    )
    rating_positive: float = Field(
        default=4.0, description="A rating at or above this is a positive event."
    )


class RecommenderConfig(BaseModel):
    """Everything a :class:`Recommender` is built from (saved with the store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    exemplars: ExemplarConfig = Field(default_factory=ExemplarConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    llm_candidates: int = Field(
        default=20,
        ge=0,
        le=26,
        description="Retrieval candidates the LLM sees (labels A..); 0: retrieval only.",
    )
    explain_top: int = Field(
        default=3, ge=0, description="Items explained per request when explain=True."
    )
    score_with_llm: bool | None = Field(
        default=None,
        description="Run the LLM ranking pass: None = only when the blend weight is > 0 "
        "(with weight 0 the LLM cannot change the order, so it only explains).",
    )
    feedback_url: str | None = Field(
        default=None,
        description="postgresql://... for a shared feedback store; None: feedback.sqlite "
        "in the store directory (or in memory before save).",
    )


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
        degraded: True when the LLM failed and retrieval order was used.
        reason: Why it degraded.
        cold_start: True when the user had no history.
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
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class _Profile:
    """What feedback added to a user's state since the build."""

    added: list[int] = field(default_factory=list)  # catalog positions, in event order
    blocked: set[int] = field(default_factory=set)


class Recommender:
    """Retrieval, LLM re-ranking with explanations, and a durable feedback loop.

    Build one with :meth:`build` (or :meth:`load` a saved store). ``recommend`` is safe to
    call from several threads; feedback updates are serialised.
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
    ) -> None:
        self.config = config
        self.path = path
        self.catalog = catalog
        self.interactions = interactions
        retriever_config = config.retriever
        if path is not None and retriever_config.cache_dir is None:
            retriever_config = retriever_config.model_copy(update={"cache_dir": str(path)})
        self.retriever = Retriever(retriever_config).fit(catalog, interactions)
        if weights is not None:
            self.retriever.weights = weights
        self._generator = generator
        self._ranker: VerbalizerRanker | None = None
        self._explainer: Explainer | None = None
        self.pool = pool if pool is not None else ExemplarPool(config.exemplars)
        self.learner = WeightLearner(config.learning.weights)
        self._profiles: dict[Any, _Profile] = {}
        self._lock = threading.RLock()
        self.store = open_store(self._store_location())
        self._replay_profiles()

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
            ConfigError: Invalid config, or ``path`` holds another store.
        """
        cfg = _parse_config(config)
        folder = None
        if path is not None:
            folder = Path(path)
            if (folder / "manifest.json").exists():
                raise ConfigError(
                    f"{folder} already holds a ragrec store; load it with Recommender.load "
                    "or choose another folder"
                )
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
        # not saved yet: a private temporary database, copied into the store on save()
        self._tmp = tempfile.TemporaryDirectory(prefix="ragrec-feedback-")
        return str(Path(self._tmp.name) / "feedback.sqlite")

    @property
    def generator(self) -> Generator:
        """The LLM backend (built on first use)."""
        if self._generator is None:
            self._generator = make_generator(self.config.generator)
        return self._generator

    @property
    def ranker(self) -> VerbalizerRanker:
        """Prompt rendering and verbalizer scoring."""
        if self._ranker is None:
            builder = PromptBuilder(self.generator.tokenizer, self.config.prompt)
            self._ranker = VerbalizerRanker(
                self.generator, builder, self.config.rerank, exemplars=self.pool
            )
        return self._ranker

    @property
    def explainer(self) -> Explainer:
        """Writes explanations."""
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
        base = self.retriever.query(user_id, text=text)
        profile = self._profiles.get(user_id)
        if profile is None or not profile.added:
            return base
        added = np.asarray(profile.added, dtype=np.int64)
        ratings = (
            np.concatenate([base.ratings, np.full(len(added), np.nan)])
            if base.ratings is not None
            else None
        )
        return RetrievalQuery(user_id, np.concatenate([base.history, added]), ratings, text)

    def history(self, user_id: Any) -> list[tuple[Any, str]]:
        """The user's history as ``(item id, title)``, oldest first (built data, then
        positive feedback)."""
        query = self._query(user_id, None)
        return [(self.catalog.item_ids[p], str(self.catalog.titles[p])) for p in query.history]

    def weights(self, user_id: Any = None) -> dict[str, float]:
        """Channel weights that apply to a user (None: the global prior)."""
        return self.retriever.weights.for_user(user_id)

    def known_user(self, user_id: Any) -> bool:
        """True when the user has any history."""
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
            ConfigError: ``k`` < 1.
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
        """:meth:`recommend` for several users (retrieval and LLM scoring batched)."""
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        cfg = self.config
        t0 = time.perf_counter()
        queries = [self._query(u, query) for u in user_ids]
        flt = filters or Filters()
        depth = max(k, cfg.llm_candidates)
        results = []
        for q in queries:
            blocked = self._profiles.get(q.user_id, _Profile()).blocked
            extra = [self.catalog.item_ids[p] for p in blocked]
            user_filter = (
                flt.model_copy(update={"exclude_ids": [*flt.exclude_ids, *extra]}) if extra else flt
            )
            results.append(self.retriever.retrieve(q, k=depth, filters=user_filter))
        t_retrieval = time.perf_counter() - t0

        blend = cfg.rerank.blend_weight
        score = cfg.score_with_llm if cfg.score_with_llm is not None else blend > 0
        use_llm = cfg.llm_candidates > 0
        recs = []
        prompts: list[RenderedPrompt | None] = [None] * len(results)
        llm_scores: list[np.ndarray | None] = [None] * len(results)
        degraded: list[str | None] = [None] * len(results)
        t1 = time.perf_counter()
        if use_llm:
            requests = []
            for q, res in zip(queries, results, strict=True):
                hist = [(self.catalog.item_ids[p], str(self.catalog.titles[p])) for p in q.history]
                cands = [(c.item_id, c.title) for c in res.candidates[: cfg.llm_candidates]]
                requests.append(
                    {"user_key": q.user_id, "history": hist, "candidates": cands, "query": query}
                )
            if score:
                scored = self.ranker.score_batch([r for r in requests if r["candidates"]])
                it = iter(scored)
                for i, r in enumerate(requests):
                    if not r["candidates"]:
                        continue
                    s = next(it)
                    prompts[i] = s.prompts[0] if s.prompts else None
                    if s.degraded:
                        degraded[i] = s.reason
                    else:
                        llm_scores[i] = s.logprobs
            else:
                for i, r in enumerate(requests):
                    if not r["candidates"]:
                        continue
                    try:
                        prompts[i] = self.ranker.prompts(**r)[0][0]
                    except (PromptTooLongError, RagrecError) as exc:
                        degraded[i] = f"{type(exc).__name__}: {exc}"
        t_llm = time.perf_counter() - t1

        for i, (q, res) in enumerate(zip(queries, results, strict=True)):
            t2 = time.perf_counter()
            order, final = self._final_order(res.scores, llm_scores[i], blend, cfg.llm_candidates)
            prompt = prompts[i]
            items = []
            for rank, idx in enumerate(order[:k], start=1):
                c = res.candidates[idx]
                label = (
                    prompt.label_of(c.item_id)
                    if prompt is not None and c.item_id in prompt.candidate_ids
                    else None
                )
                lp = llm_scores[i]
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
            if explain and cfg.explain_top > 0 and prompt is not None and degraded[i] is None:
                items = self._explain(q, items, prompt, query)
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
                blend_weight=blend if llm_scores[i] is not None else 0.0,
                llm_ranked=llm_scores[i] is not None and blend > 0,
                timings={
                    "retrieval": t_retrieval / len(queries),
                    "llm_rank": t_llm / len(queries),
                    "explain": time.perf_counter() - t2,
                    "total": t_retrieval / len(queries)
                    + t_llm / len(queries)
                    + (time.perf_counter() - t2),
                },
                degraded=degraded[i] is not None,
                reason=degraded[i],
                cold_start=res.cold_start,
            )
            self._log(rec, prompt, q)
            recs.append(rec)
        return recs

    @staticmethod
    def _final_order(
        retrieval: np.ndarray, llm: np.ndarray | None, blend: float, n_llm: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the candidate list, best first, and the final scores."""
        final = np.asarray(retrieval, dtype=np.float64).copy()
        if llm is not None and blend > 0 and len(llm):
            n = len(llm)
            head = blend_scores(final[:n], llm, blend)
            # re-ranked candidates stay above deeper ones, which keep retrieval order
            final = np.concatenate([1000.0 + head, final[n:] - final.max() - 1.0])
        order = np.argsort(-final, kind="stable")
        return order, final

    def _explain(
        self,
        query: RetrievalQuery,
        items: list[RecommendedItem],
        prompt: RenderedPrompt,
        text: str | None,
    ) -> list[RecommendedItem]:
        explain = [it for it in items[: self.config.explain_top] if it.label is not None]
        history = [str(self.catalog.titles[p]) for p in query.history]
        results = self.explainer.explain(
            history=history,
            items=[(it.item_id, it.label or "", it.title) for it in explain],
            candidate_labels=prompt.labels,
            query=text,
        )
        by_id = {r.item_id: r for r in results}
        return [
            RecommendedItem(**{**asdict_shallow(it), "explanation": by_id.get(it.item_id)})
            for it in items
        ]

    def _log(
        self, rec: Recommendation, prompt: RenderedPrompt | None, query: RetrievalQuery
    ) -> None:
        """Record what was served, so feedback can be credited to channels and turned into
        exemplars."""
        context = {
            "history_ids": [self.catalog.item_ids[p] for p in query.history][-50:],
            "candidate_ids": list(prompt.candidate_ids) if prompt else [],
            "labels": list(prompt.labels) if prompt else [],
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
            What happened: ``stored`` (False for a repeat), ``reward``, the user's
            ``weights`` after the update, ``exemplar`` (id added or removed, if any).

        Raises:
            DataValidationError: A malformed event, or an item not in the catalog
                (nothing is stored).
        """
        ev = event if isinstance(event, FeedbackEvent) else _parse_event(event)
        if self.catalog.positions([ev.item_id])[0] < 0:
            raise InvalidFeedbackError(
                "feedback event",
                [
                    FieldIssue(
                        "item_id",
                        ev.item_id,
                        f"not in the catalog ({len(self.catalog)} items)",
                        "send events for catalog items, or add_items() first",
                    )
                ],
            )
        with self._lock:
            stored = self.store.add(ev)
            out: dict[str, Any] = {"stored": stored, "event_id": ev.event_id}
            if not stored:
                out["weights"] = self.weights(ev.user_id)
                return out
            out.update(self._learn(ev))
        return out

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
            profile = self._profiles.setdefault(ev.user_id, _Profile())
            if positive and pos not in profile.added:
                profile.added.append(pos)
            if negative:
                profile.blocked.add(pos)
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
        titles = dict(
            zip(self.catalog.item_ids.tolist(), self.catalog.titles.tolist(), strict=True)
        )
        exemplar = Exemplar(
            user_id=ev.user_id,
            history=tuple(str(titles.get(i, "")) for i in hist_ids if i in titles)[
                -self.config.exemplars.max_history :
            ],
            candidates=tuple(str(titles.get(i, "")) for i in cand_ids),
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

    def _replay_profiles(self) -> None:
        """Rebuild profiles and weights from the store (after load)."""
        for user in self.store.users():
            profile = _Profile()
            for event in self.store.events(user):
                kind = str(event.kind)
                pos = int(self.catalog.positions([event.item_id])[0])
                if pos < 0:
                    continue  # item removed since
                good = event.is_positive(min_rating=self.config.learning.rating_positive)
                if good and pos not in profile.added:
                    profile.added.append(pos)
                if kind in NEGATIVE:
                    profile.blocked.add(pos)
            if profile.added or profile.blocked:
                self._profiles[user] = profile

    # catalog changes ----------------------------------------------------------------------

    def add_items(self, items: Catalog | pd.DataFrame) -> int:
        """Add items to the catalog (embedded and indexed at once); returns how many.

        Raises:
            DataValidationError: An id already in the catalog, or malformed rows.
        """
        new = items if isinstance(items, Catalog) else Catalog.from_frame(items, source="add_items")
        clash = set(new.item_ids.tolist()) & set(self.catalog.item_ids.tolist())
        if clash:
            raise DataValidationError(
                "add_items",
                f"{len(clash)} item id(s) already in the catalog, e.g. {sorted(clash)[:3]}",
                fix="use new ids, or remove_items() the old ones first",
            )
        with self._lock:
            self._refit(_concat_catalogs(self.catalog, new), self.interactions)
        return len(new)

    def remove_items(self, item_ids: Iterable[Any]) -> int:
        """Remove items (never recommended again; their interactions leave the channels);
        returns how many were removed. Unknown ids raise."""
        ids = list(item_ids)
        for i in ids:
            self._position(i)
        with self._lock:
            drop = self.catalog.positions(ids)
            keep = np.setdiff1d(np.arange(len(self.catalog)), drop)
            catalog = self.catalog.subset(keep)
            self._refit(catalog, self.interactions.restrict_items(catalog))
        return len(ids)

    def _refit(self, catalog: Catalog, interactions: Interactions) -> None:
        old_titles = self.catalog
        weights = self.retriever.weights
        self.retriever = Retriever(self.retriever.config).fit(catalog, interactions)
        self.retriever.weights = weights
        self.catalog, self.interactions = catalog, interactions
        remap = {}
        for user, profile in self._profiles.items():
            ids = [old_titles.item_ids[p] for p in profile.added]
            blocked = [old_titles.item_ids[p] for p in profile.blocked]
            remap[user] = _Profile(
                [int(p) for p in catalog.positions(ids) if p >= 0],
                {int(p) for p in catalog.positions(blocked) if p >= 0},
            )
        self._profiles = remap
        if self.path is not None:
            self.save(self.path)

    # privacy ------------------------------------------------------------------------------

    def forget_user(self, user_id: Any) -> dict[str, int]:
        """Delete everything held about a user: feedback events, logged recommendations,
        per-user weights, profile, exemplars built from their data, and their training
        interactions (the channels are refit without them).

        Returns:
            Counts removed per kind.
        """
        with self._lock:
            counts = dict(self.store.forget_user(user_id))
            counts["exemplars"] = self.pool.forget_user(user_id)
            self.retriever.weights = self.retriever.weights.without_user(user_id)
            counts["profile"] = int(self._profiles.pop(user_id, None) is not None)
            mask = np.asarray([u != user_id for u in self.interactions.user_ids.tolist()])
            counts["interactions"] = int((~mask).sum())
            if counts["interactions"]:
                self._refit(self.catalog, self.interactions.select(np.flatnonzero(mask)))
            elif self.path is not None:
                self.save(self.path)
        return counts

    # persistence --------------------------------------------------------------------------

    def _save_pool(self) -> None:
        if self.path is not None:
            self.pool.save(self.path / "exemplars.json")

    def save(self, path: str | Path) -> Path:
        """Write the store directory: manifest, config, catalog, interactions, channel
        weights, exemplar pool; the feedback database and the embedding cache already
        live there when the recommender was built or loaded with this path."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "config.json", self.config.model_dump_json(indent=2))
        _write_frame(folder / "catalog.parquet", _catalog_frame(self.catalog))
        _write_frame(folder / "interactions.parquet", self.interactions.to_frame())
        _atomic_write(folder / "weights.json", self.retriever.weights.to_json())
        self.pool.save(folder / "exemplars.json")
        if self.config.feedback_url is None and self.path != folder:
            # the database moves with the store: copy it (consistent, via SQLite's backup)
            source = Path(self.store.location)
            self.store.close()
            _copy_sqlite(source, folder / "feedback.sqlite")
            self.store = open_store(str(folder / "feedback.sqlite"))
        self.path = folder
        manifest = {
            "format": STORE_FORMAT,
            "ragrec": __version__,
            "saved": time.time(),
            "files": [
                "config.json",
                "catalog.parquet",
                "interactions.parquet",
                "weights.json",
                "exemplars.json",
                "feedback.sqlite",
            ],
        }
        _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2))
        return folder

    @classmethod
    def load(cls, path: str | Path, *, generator: Generator | None = None) -> Recommender:
        """Open a store directory written by :meth:`save`.

        Raises:
            ConfigError: Not a store, or written by a newer format than this ragrec reads.
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
            fmt = int(manifest["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{manifest_path} is damaged ({exc}); rebuild the store") from exc
        if fmt > STORE_FORMAT:
            raise ConfigError(
                f"{folder} was written by ragrec {manifest.get('ragrec')} (store format {fmt}); "
                f"this ragrec {__version__} reads format {STORE_FORMAT}: upgrade ragrec"
            )
        config = _parse_config(json.loads((folder / "config.json").read_text()))
        catalog = _catalog_from_frame(pd.read_parquet(folder / "catalog.parquet"))
        interactions = _interactions_from_frame(pd.read_parquet(folder / "interactions.parquet"))
        weights = ChannelWeights.from_json((folder / "weights.json").read_text())
        pool = ExemplarPool.load(folder / "exemplars.json", config.exemplars)
        return cls(
            config,
            catalog,
            interactions,
            path=folder,
            generator=generator,
            weights=weights,
            pool=pool,
        )


def asdict_shallow(item: RecommendedItem) -> dict[str, Any]:
    """A dataclass's fields without deep-copying them."""
    return {f: getattr(item, f) for f in item.__dataclass_fields__}


def _parse_config(config: RecommenderConfig | Mapping[str, Any] | None) -> RecommenderConfig:
    if isinstance(config, RecommenderConfig):
        return config
    try:
        return RecommenderConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"recommender config: {describe_validation_error(exc)}; see RecommenderConfig"
        ) from exc


def _parse_event(data: Mapping[str, Any]) -> FeedbackEvent:
    """An event from a mapping; ``event_id`` and ``timestamp`` default to a new uuid and
    now (pass both when a client may retry, so the retry is recognised)."""
    fields = dict(data)
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("timestamp", datetime.now(UTC))
    return FeedbackEvent.parse(fields)


def _plain_id(value: Any) -> int | str:
    """An id as the store keeps it (numpy scalars to Python)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, int | str) else str(value)


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
