"""The one place where the facade's result objects become HTTP bodies."""

from __future__ import annotations

import math
from typing import Any

from ragrec import Recommendation, RecommendedItem
from ragrec.serve._models import (
    ChannelScore,
    EvidenceItem,
    EvidenceShare,
    Explanation,
    RecommendedItemOut,
    RecommendResponse,
)

__all__ = ["to_response"]


def _finite(value: float) -> float:
    # JSON has no NaN or infinity; a score that is not finite sorts last anyway
    return value if math.isfinite(value) else -1e308


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _explanation(item: RecommendedItem) -> Explanation | None:
    exp = item.explanation
    if exp is None:
        return None
    ev = exp.evidence
    return Explanation(
        text=exp.text,
        source=exp.source,
        template=exp.template,
        cited=[_plain(c) for c in exp.cited],
        rejected=exp.rejected,
        channels=[EvidenceShare(channel=c.channel, share=c.share, rank=c.rank) for c in ev.channels]
        if ev
        else [],
        history=[
            EvidenceItem(
                item_id=_plain(h.item_id), title=h.title, share=h.share, channels=list(h.channels)
            )
            for h in ev.history
        ]
        if ev
        else [],
        genres=list(ev.genres) if ev else [],
    )


def _item(item: RecommendedItem) -> RecommendedItemOut:
    return RecommendedItemOut(
        item_id=_plain(item.item_id),
        title=item.title,
        rank=item.rank,
        score=_finite(item.score),
        retrieval_score=_finite(item.retrieval_score),
        llm_logprob=None if item.llm_logprob is None else _finite(item.llm_logprob),
        label=item.label,
        channels=[ChannelScore(channel=c, rank=r, score=_finite(s)) for c, r, s in item.channels],
        explanation=_explanation(item),
    )


def to_response(rec: Recommendation) -> RecommendResponse:
    """A :class:`Recommendation` as the body of ``POST /recommend``."""
    return RecommendResponse(
        rec_id=rec.id,
        user_id=_plain(rec.user_id),
        items=[_item(i) for i in rec.items],
        query=rec.query,
        cold_start=rec.cold_start,
        degraded=rec.degraded,
        reason=rec.reason,
        llm_ranked=rec.llm_ranked,
        blend_weight=rec.blend_weight,
        model=rec.model,
        backend=rec.backend,
        prompt_id=rec.prompt_id,
        prompt_hash=rec.prompt_hash,
        exemplar_ids=list(rec.exemplar_ids),
        weights={str(k): float(v) for k, v in rec.weights.items()},
        timings={str(k): float(v) for k, v in rec.timings.items()},
        llm_note=rec.llm_note,
    )
