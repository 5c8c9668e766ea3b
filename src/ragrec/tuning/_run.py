"""A tuning run over a store: examples from its interactions and feedback, the base model
(or the latest run, incrementally), the run folder under ``tuned/``; and forgetting a
user's examples in the runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.feedback import NEGATIVE_KINDS, FeedbackEvent
from ragrec.generation import GeneratorConfig
from ragrec.retrieval import RetrievalQuery, Retriever
from ragrec.tuning._config import TuneConfig
from ragrec.tuning._examples import FeedbackSignal, build_examples, holdout_rows
from ragrec.tuning._trainer import TuneProgress, Tuner, TuneResult, _atomic_json, latest_run

logger = logging.getLogger(__name__)

__all__ = ["forget_tuning_user", "incremental_base", "tune_store"]


def incremental_base(root: Path, base: GeneratorConfig, method: str) -> GeneratorConfig:
    """The generator config that continues the latest finished run under ``root``.

    Raises:
        ConfigError: No finished run, or a LoRA run to continue with full tuning.
    """
    last = latest_run(root)
    if last is None:
        raise ConfigError(
            f"from_latest=True but {root} holds no finished run; tune once without it"
        )
    info = json.loads((last / "tune.json").read_text())
    if info["method"] == "lora" and method == "lora":
        return base.model_copy(
            update={
                "model": info["base_model"],
                "gguf_file": info["base_gguf_file"],
                "adapter": info["model_path"],
            }
        )
    if info["method"] == "full":
        return base.model_copy(
            update={"model": info["model_path"], "gguf_file": None, "adapter": None}
        )
    raise ConfigError(
        f"from_latest=True: the latest run {last.name} is a LoRA adapter and "
        f"method={method!r}; merge it first or tune with method='lora'"
    )


def tune_store(
    root: Path | None,
    config: TuneConfig,
    *,
    base: GeneratorConfig,
    catalog: Catalog,
    interactions: Interactions,
    retriever: Retriever,
    events: Sequence[FeedbackEvent] = (),
    rating_positive: float = 4.0,
    run_id: str | None = None,
    from_latest: bool = False,
    resume: bool = False,
    progress: Callable[[TuneProgress], None] | None = None,
) -> TuneResult:
    """Fine-tune on a store's data into ``root/<run_id>`` (see ``Recommender.tune``;
    ``root`` is None for a recommender that was never saved: an error).

    Examples: each training user's sequence, sliding (the true next item among the
    retriever's candidates for the history before it, shuffled), plus feedback events
    (liked items as answers, disliked ones as unlikelihood terms).

    Raises:
        ConfigError: No ``root``, ``resume`` without ``run_id``, ``from_latest`` without a run, no
            training users.
    """
    if root is None:
        raise ConfigError(
            "tune() saves into the store folder: save() the recommender (or build it "
            "with path=...) first"
        )
    if resume and run_id is None:
        raise ConfigError("resume=True needs run_id: the run folder under tuned/ to continue")
    if from_latest:
        base = incremental_base(root, base, config.method)
    run_id = run_id or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{config.method}"
    signals = [
        FeedbackSignal(e.user_id, e.item_id, e.is_positive(min_rating=rating_positive))
        for e in sorted(events, key=lambda e: e.timestamp)
        if e.is_positive(min_rating=rating_positive) or str(e.kind) in NEGATIVE_KINDS
    ]
    if config.holdout_last and not resume:
        # a ranking that has not seen the held-out targets
        retriever = retriever.refit(
            catalog, holdout_rows(catalog, interactions, config.holdout_last)
        )

    def candidates(user: Any, history: np.ndarray, k: int) -> list[int]:
        result = retriever.retrieve(RetrievalQuery(user, history), k=k)
        return [int(p) for p in result.positions]

    examples = (
        []
        if resume
        else build_examples(
            catalog, interactions, candidates=candidates, config=config, feedback=signals
        )
    )
    return Tuner(config, base=base).fit(
        examples, catalog, root / run_id, resume=resume, progress=progress
    )


def forget_tuning_user(root: Path, key: Any) -> tuple[int, int]:
    """Remove a user's examples from every run's ``examples.json`` under ``root``;
    returns (examples removed, runs that had trained on them). The weights of those runs
    are not un-trained: tune again without ``from_latest`` to drop the user's influence."""
    removed = runs = 0
    if not root.is_dir():
        return 0, 0
    for file in sorted(root.glob("*/examples.json")):
        saved = json.loads(file.read_text(encoding="utf-8"))
        kept = [e for e in saved if e.get("user_id") != key]
        if len(kept) != len(saved):
            removed += len(saved) - len(kept)
            runs += 1
            _atomic_json(file, kept)
    if runs:
        logger.warning(
            "%d tuned run(s) were trained on a forgotten user's data; their examples are "
            "gone, their weights keep what was learnt: tune again without from_latest",
            runs,
        )
    return removed, runs
