"""Configuration of an offline evaluation run (the ``[eval]`` table)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ragrec._settings import Settings
from ragrec.errors import ConfigError
from ragrec.eval._registry import known_ranker
from ragrec.eval.metrics import parse_metrics

__all__ = ["DEFAULT_METRICS", "EvalConfig"]

DEFAULT_METRICS = (
    "recall@5",
    "recall@10",
    "recall@20",
    "mrr@5",
    "mrr@10",
    "ndcg@5",
    "ndcg@10",
)
"""The metrics an evaluation reports unless told otherwise."""


class EvalConfig(Settings):
    """An offline evaluation run."""

    protocol: Literal["llamarec", "llmrank-c20", "temporal", "custom"] = Field(
        default="llamarec",
        description="Evaluation protocol: llamarec (leave-one-out, every item ranked; see "
        "ARCHITECTURE: LlamaRec), llmrank-c20 (target + 19 sampled negatives; report "
        "ndcg@1/5/10/20), temporal (global time cutoffs), custom (splits from files).",
    )
    protocol_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the chosen protocol, checked when the data are prepared "
        "(unknown keys are errors): llamarec: k (5); llmrank-c20: k (5), negatives (19), "
        "seed (0); temporal: validation_quantile (0.8), test_quantile (0.9); custom: "
        "train, validation, test (file paths, required).",
    )
    split: Literal["validation", "test"] = Field(default="test", description="Split scored.")
    ranker: str = Field(default="popularity", description="Ranker name: popularity, random.")
    ranker_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the chosen ranker, checked by that ranker's config model.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        description="Metric names, e.g. ndcg@10, recall@20, mrr@10.",
    )
    seed: int = Field(default=0, description="Seed recorded with the run and given to rankers.")
    batch_size: int = Field(default=256, ge=1, description="Users scored per batch.")
    limit_users: int | None = Field(
        default=None, ge=1, description="Evaluate only the first N users (quick looks)."
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        try:
            return [m.name for m in parse_metrics(value)]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("ranker")
    @classmethod
    def _known_ranker(cls, value: str) -> str:
        return known_ranker(value)
