"""The configuration a :class:`~ragrec.Recommender` is built from (saved with the store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from ragrec._settings import Settings
from ragrec.errors import ConfigError, describe_validation_error
from ragrec.feedback import LearningConfig
from ragrec.generation import ExplainConfig, GeneratorConfig, RerankConfig
from ragrec.prompting import ExemplarConfig, PromptConfig
from ragrec.retrieval import RetrieverConfig

__all__ = ["LearningConfig", "RecommenderConfig", "parse_recommender_config"]


class RecommenderConfig(Settings):
    """Everything a :class:`Recommender` is built from (saved with the store)."""

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
    query_boost: dict[str, float] = Field(
        default_factory=lambda: {"semantic": 4.0},
        description="With a free-text query, multiply these channels' weights for that "
        "request (the semantic channel reads the query; at its prior weight 0.3 the "
        "query barely moved the list).",
    )
    explain_top: int = Field(
        default=1,
        ge=0,
        description="Items whose evidence sentence the LLM rewrites per request when "
        "explain=True (every item gets its evidence sentence; each rewrite costs about "
        "0.7 s on a 2-core CPU with the bundled model).",
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

    @property
    def llm_ranks(self) -> bool:
        """Whether requests run the LLM ranking pass (see ``score_with_llm``)."""
        if self.llm_candidates == 0:
            return False
        if self.score_with_llm is not None:
            return self.score_with_llm
        return self.rerank.blend_weight > 0

    def llm_note(self) -> str | None:
        """Why the LLM ranking pass does not run, and how to turn it on (None when it
        runs)."""
        if self.llm_ranks:
            return None
        if self.llm_candidates == 0:
            return "LLM ranking off: llm_candidates = 0 (retrieval only)"
        if self.score_with_llm is False:
            return "LLM ranking off: score_with_llm = false"
        return (
            f"LLM ranking off: blend weight {self.rerank.blend_weight:g} (fit on validation, "
            f"the LLM did not improve on retrieval; {self.generator.model} ranks near chance). "
            "Turn it on with a model that helps: `ragrec tune` then "
            "`ragrec eval --ranker llm` to fit rerank.blend_weight, or a stronger "
            "model/backend (generator.model, generator.backend = 'vllm' or 'openai')"
        )


def parse_recommender_config(
    config: RecommenderConfig | Mapping[str, Any] | None,
) -> RecommenderConfig:
    """A :class:`RecommenderConfig` from itself, its dict form or None (the defaults).

    Raises:
        ConfigError: Unknown keys or invalid values, named.
    """
    if isinstance(config, RecommenderConfig):
        return config
    try:
        return RecommenderConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"recommender config: {describe_validation_error(exc)}; see RecommenderConfig"
        ) from exc
