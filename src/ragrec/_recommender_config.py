"""The configuration a :class:`~ragrec.Recommender` is built from (saved with the store)."""

from __future__ import annotations

from pydantic import Field

from ragrec._settings import Settings
from ragrec.feedback import WeightLearnerConfig
from ragrec.generation import ExplainConfig, GeneratorConfig, RerankConfig
from ragrec.prompting import ExemplarConfig, PromptConfig
from ragrec.retrieval import RetrieverConfig

__all__ = ["LearningConfig", "RecommenderConfig"]


class LearningConfig(Settings):
    """What feedback changes."""

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
