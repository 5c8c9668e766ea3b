"""The public facade: build, recommend, take feedback, forget, save and load.

It owns the state and its lock; the request path is :class:`ragrec._pipeline.Pipeline`,
the store directory :mod:`ragrec._store`, feedback learning
:class:`ragrec.feedback.FeedbackLearner`, tuning :func:`ragrec.tuning.tune_store`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragrec import _store
from ragrec._pipeline import Pipeline, check_request
from ragrec._recommender_config import (
    LearningConfig,
    RecommenderConfig,
    parse_recommender_config,
)
from ragrec._results import Recommendation, RecommendedItem, plain_value, served_log
from ragrec.data import (
    Catalog,
    Interactions,
    add_to_catalog,
    check_user_id,
    remove_from_catalog,
    user_rows,
)
from ragrec.errors import RagrecError
from ragrec.feedback import (
    FeedbackEvent,
    FeedbackLearner,
    FeedbackOutcome,
    SQLiteFeedbackStore,
    check_events,
    open_store,
)
from ragrec.generation import Explainer, Generator, VerbalizerRanker, make_generator
from ragrec.prompting import ExemplarPool
from ragrec.retrieval import (
    ChannelWeights,
    Filters,
    FusionFit,
    FusionFitConfig,
    RetrievalQuery,
    Retriever,
    apply_fusion,
    fit_fusion,
    holdout_last,
)
from ragrec.tuning import (
    TuneConfig,
    TuneProgress,
    TuneResult,
    forget_tuning_user,
    parse_tune_config,
    tune_store,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FeedbackOutcome",
    "LearningConfig",
    "Recommendation",
    "RecommendedItem",
    "Recommender",
    "RecommenderConfig",
]


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
        self._config = config
        self.path = path
        self.catalog = catalog
        self.interactions = interactions
        self.retriever = (
            retriever
            if retriever is not None
            else Retriever(_store.retriever_config(config, path)).fit(catalog, interactions)
        )
        if weights is not None:
            self.retriever.weights = weights
        # exemplar selection embeds histories with the retriever's (cached) model when the
        # retriever has loaded one, instead of loading a second copy
        shared = self.retriever.embedder if self.retriever.embeddings is not None else None
        self.pool = pool if pool is not None else ExemplarPool(config.exemplars, embedder=shared)
        self._lock = threading.RLock()
        self.pipeline = Pipeline(
            generator if generator is not None else self._make_generator,
            prompt=config.prompt,
            rerank=config.rerank,
            explain=config.explain,
            n_candidates=config.llm_candidates,
            exemplars=self.pool,
            pool_lock=self._lock,
        )
        self.learning = FeedbackLearner(
            config.learning, self.pool, max_history=config.exemplars.max_history
        )
        location, self._tmp = _store.feedback_location(config.feedback_url, path)
        self.store = open_store(location)
        self.retriever.weights = self.learning.replay(self.store, catalog, self.retriever.weights)

    def _make_generator(self) -> Generator:
        return make_generator(self.config.generator)

    @property
    def config(self) -> RecommenderConfig:
        """The configuration (saved with the store); setting it applies the new prompt,
        re-ranking, explanation and learning settings to the next request."""
        return self._config

    @config.setter
    def config(self, config: RecommenderConfig) -> None:
        self._config = config
        self.pipeline.configure(
            prompt=config.prompt,
            rerank=config.rerank,
            explain=config.explain,
            n_candidates=config.llm_candidates,
        )
        self.learning.config = config.learning

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
        cfg = parse_recommender_config(config)
        folder = _store.new_store_folder(path) if path is not None else None
        rec = cls(cfg, catalog, interactions, path=folder, generator=generator)
        if cfg.exemplars.k > 0 and len(rec.pool) == 0:
            rec.pool.seed_from_training(catalog, interactions)
        if folder is not None:
            rec.save(folder)
        return rec

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
        return self.pipeline.generator

    @property
    def ranker(self) -> VerbalizerRanker:
        """Prompt rendering and verbalizer scoring."""
        return self.pipeline.ranker

    @property
    def explainer(self) -> Explainer:
        """Writes explanations."""
        return self.pipeline.explainer

    # state --------------------------------------------------------------------------------

    def _query(self, user_id: Any, text: str | None) -> RetrievalQuery:
        """The user's query: built history, then positive feedback (call under the lock)."""
        base = self.retriever.query(user_id, text=text)
        profile = self.learning.profiles.get(user_id)
        return base if profile is None else profile.extend(base)

    def history(self, user_id: Any) -> list[tuple[Any, str]]:
        """The user's history as ``(item id, title)``, oldest first (built data, then
        positive feedback)."""
        with self._lock:
            query = self._query(user_id, None)
            catalog = self.catalog
        return [(plain_value(catalog.item_ids[p]), str(catalog.titles[p])) for p in query.history]

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
        (rec,) = self.recommend_batch([user_id], k=k, query=query, explain=explain, filters=filters)
        return rec

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
        k, flt = check_request(k, filters)
        users = list(user_ids)
        if not users:
            return []
        cfg = self.config
        with self._lock:
            # one consistent snapshot: feedback and catalog changes wait for retrieval
            catalog, retriever = self.catalog, self.retriever
            queries = [self._query(user, query) for user in users]
            per_user = [self.learning.filters(q.user_id, flt, catalog) for q in queries]
            results, t_retrieval = self.pipeline.retrieve(
                retriever,
                queries,
                k=max(k, cfg.llm_candidates),
                filters=per_user,
                boost=cfg.query_boost if query else None,
            )
        blend, score = cfg.rerank.blend_weight, cfg.llm_ranks
        ranked = self.pipeline.rank(
            retriever,
            queries,
            results,
            catalog,
            k=k,
            blend=blend,
            score=score,
            explain=explain,
            rewrite=cfg.explain_top,
            text=query,
        )
        note = cfg.llm_note()
        recs = []
        for t_ret, r in zip(t_retrieval, ranked, strict=True):
            rec = r.recommendation(
                query=query, model=cfg.generator, blend=blend, retrieval_seconds=t_ret, note=note
            )
            # anonymous requests (user_id None) have no one to credit feedback to
            if rec.user_id is not None:
                try:
                    self.store.log_recommendation(
                        **served_log(
                            rec,
                            r.query,
                            r.candidates.candidates[: cfg.llm_candidates],
                            r.rerank.prompt,
                            catalog,
                        )
                    )
                except RagrecError as exc:  # serving must not fail because logging did
                    logger.warning("recommendation %s not logged: %s", rec.id, exc)
            recs.append(rec)
        return recs

    # feedback -----------------------------------------------------------------------------

    def feedback(self, event: FeedbackEvent | Mapping[str, Any]) -> FeedbackOutcome:
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
        return self._store_events([event], batch=None)[0]

    def feedback_many(
        self, events: Iterable[FeedbackEvent | Mapping[str, Any]]
    ) -> list[FeedbackOutcome]:
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
        return self._store_events(events, batch="feedback batch")

    def _store_events(
        self, events: Iterable[FeedbackEvent | Mapping[str, Any]], *, batch: str | None
    ) -> list[FeedbackOutcome]:
        with self._lock:
            parsed = check_events(events, self.catalog, batch=batch)
            stored = self.store.add_each(parsed)
            return [
                self._learn(ev)
                if new
                else FeedbackOutcome(False, ev.event_id, self.weights(ev.user_id))
                for ev, new in zip(parsed, stored, strict=True)
            ]

    def _learn(self, ev: FeedbackEvent) -> FeedbackOutcome:
        """Let the learners react to a newly stored event (call under the lock)."""
        self.retriever.weights, outcome = self.learning.learn(
            ev, self.store, self.catalog, self.retriever.weights
        )
        if outcome.exemplar is not None and self.path is not None:
            self.pool.save(self.path / "exemplars.json")
        return outcome

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
            self._refit(add_to_catalog(self.catalog, new), self.interactions)
        return len(new)

    def remove_items(self, item_ids: Iterable[Any]) -> int:
        """Remove items (never recommended again; their interactions leave the channels);
        returns how many were removed.

        Raises:
            DataValidationError: An id is not in the catalog (nothing is removed).
            ConfigError: Every item would be removed.
        """
        ids = list(dict.fromkeys(plain_value(i) for i in item_ids))
        if not ids:
            return 0
        with self._lock:
            catalog = remove_from_catalog(self.catalog, ids)
            self._refit(catalog, self.interactions.restrict_items(catalog))
        return len(ids)

    def _refit(self, catalog: Catalog, interactions: Interactions) -> None:
        """Refit the channels on new data and swap it in at once (call under the lock)."""
        retriever = self.retriever.refit(catalog, interactions)
        self.learning.move(self.catalog, catalog)
        self.retriever, self.catalog, self.interactions = retriever, catalog, interactions
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
        probe = self.retriever.refit(self.catalog, rest)
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
            _store.atomic_write(self.path / "fusion.json", json.dumps(fit.as_dict(), indent=2))
        return fit

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
        """Fine-tune the ranking model on this store's interaction logs and feedback
        (:func:`ragrec.tuning.tune_store`) into ``STORE/tuned/<run_id>/`` (adapter or
        model, ``tune.json``, ``loss.json``, a resumable checkpoint). The store keeps
        using its configured model: point ``generator.adapter`` (lora) or
        ``generator.model`` (full) at the result (:meth:`TuneResult.generator_config`).

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
        cfg = parse_tune_config(config)
        with self._lock:
            catalog, interactions, retriever = self.catalog, self.interactions, self.retriever
            events = self.store.events() if cfg.feedback else []
        return tune_store(
            self.path / "tuned" if self.path is not None else None,
            cfg,
            base=self.config.generator,
            catalog=catalog,
            interactions=interactions,
            retriever=retriever,
            events=events,
            rating_positive=self.config.learning.rating_positive,
            run_id=run_id,
            from_latest=from_latest,
            resume=resume,
            progress=progress,
        )

    # privacy ------------------------------------------------------------------------------

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
        key = check_user_id(user_id)
        with self._lock:
            counts = dict(self.store.forget_user(key))
            counts["exemplars"] = self.pool.forget_user(key)
            self.retriever.weights = self.retriever.weights.without_user(key)
            counts["profile"] = int(self.learning.profiles.pop(key, None) is not None)
            mask = user_rows(self.interactions, key)
            counts["interactions"] = int(mask.sum())
            if counts["interactions"]:
                self._refit(self.catalog, self.interactions.select(np.flatnonzero(~mask)))
            elif self.path is not None:
                self.save(self.path)
            counts["tuning_examples"], counts["tuned_runs"] = (
                forget_tuning_user(self.path / "tuned", key) if self.path is not None else (0, 0)
            )
            if isinstance(self.store, SQLiteFeedbackStore):
                _store.compact_sqlite(self.store.path)
        logger.info("forgot a user: %s", counts)
        return counts

    # persistence --------------------------------------------------------------------------

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
            same = _store.check_save_target(self.path, folder)
            _store.write_store(
                folder,
                config=self.config,
                catalog=self.catalog,
                interactions=self.interactions,
                retriever=self.retriever,
                pool=self.pool,
            )
            if self.config.feedback_url is None and not same:
                # the database moves with the store: copy it (consistent, via SQLite's backup)
                self.store = _store.move_database(self.store, folder)
                if self._tmp is not None:
                    # the private copy held every user's events: it must not outlive the move
                    self._tmp.cleanup()
                    self._tmp = None
            self.path = folder
            _store.write_manifest(folder)
        return folder

    @classmethod
    def load(cls, path: str | Path, *, generator: Generator | None = None) -> Recommender:
        """Open a store directory written by :meth:`save`.

        Raises:
            ConfigError: Not a store, written by a newer format than this ragrec reads,
                or a file of it is missing or damaged (names the file).
        """
        folder = Path(path)
        saved = _store.read_store(folder)
        rec = cls(
            saved.config,
            saved.catalog,
            saved.interactions,
            path=folder,
            generator=generator,
            weights=saved.weights,
            pool=saved.pool,
            retriever=saved.retriever,
        )
        if saved.retriever is None:  # keep the fit, so the next load is fast
            _store.save_refit_retriever(folder, rec.retriever)
        return rec
