"""What a request returns: the typed recommendation and its items, and the record of
what was served that the feedback store keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ragrec.data import Catalog
from ragrec.feedback import ItemProvenance, ServedItem
from ragrec.generation import ExplanationResult
from ragrec.prompting import LABELS, RenderedPrompt
from ragrec.retrieval import Candidate, RetrievalQuery

__all__ = ["Recommendation", "RecommendedItem", "jsonable", "plain_id", "plain_value", "served_log"]


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
        return jsonable(out)


def jsonable(value: Any) -> Any:
    """``value`` with numpy values as Python ones and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def plain_value(value: Any) -> Any:
    """A numpy scalar as the Python value (ids leave the library as Python objects)."""
    return value.item() if isinstance(value, np.generic) else value


def served_log(
    rec: Recommendation,
    query: RetrievalQuery,
    candidates: Sequence[Candidate],
    prompt: RenderedPrompt | None,
    catalog: Catalog,
) -> dict[str, Any]:
    """The keyword arguments of ``FeedbackStore.log_recommendation`` for a served
    recommendation: what was served, so feedback can be credited to the channels and
    turned into exemplars (the candidates the LLM saw, or would have, under their labels).
    """
    context = {
        "history_ids": [catalog.item_ids[p] for p in query.history][-50:],
        "candidate_ids": (
            list(prompt.candidate_ids) if prompt else [c.item_id for c in candidates]
        ),
        "labels": list(prompt.labels) if prompt else list(LABELS[: len(candidates)]),
    }
    return {
        "rec_id": rec.id,
        "user_id": plain_id(rec.user_id),
        "items": [
            ServedItem(
                item_id=plain_id(it.item_id),
                score=it.score if np.isfinite(it.score) else None,
                provenance=tuple(
                    ItemProvenance(channel=c, rank=r, score=sc) for c, r, sc in it.channels
                ),
            )
            for it in rec.items
        ],
        "weights": dict(rec.weights),
        "prompt_hash": rec.prompt_hash,
        "model": f"{rec.backend}:{rec.model}",
        "timestamp": datetime.now(UTC),
        "context": jsonable(context),
    }


def plain_id(value: Any) -> int | str:
    """An id as the feedback store keeps it (numpy scalars to Python)."""
    value = plain_value(value)
    return value if isinstance(value, int | str) else str(value)
