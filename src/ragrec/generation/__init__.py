"""Generation: LLM backends behind one protocol, verbalizer ranking and the blend."""

from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    GenerationInfo,
    Generator,
    GeneratorConfig,
    renormalise,
)
from ragrec.generation._explain import (
    ExplainConfig,
    Explainer,
    ExplainItem,
    ExplanationResult,
    TitleIndex,
    display_title,
    evidence_sentence,
)
from ragrec.generation._export import (
    ExportResult,
    default_export_dir,
    export_model,
    is_exported_folder,
    merge_adapter,
)
from ragrec.generation._factory import make_generator
from ragrec.generation._rerank import (
    LLMScores,
    RerankConfig,
    RerankRequest,
    VerbalizerRanker,
    blend_scores,
    content_free_prior,
    fit_blend_weight,
)

__all__ = [
    "BUNDLED_MODEL",
    "BackendError",
    "ExplainConfig",
    "ExplainItem",
    "Explainer",
    "ExplanationResult",
    "ExportResult",
    "GenerationInfo",
    "Generator",
    "GeneratorConfig",
    "LLMScores",
    "RerankConfig",
    "RerankRequest",
    "TitleIndex",
    "VerbalizerRanker",
    "blend_scores",
    "content_free_prior",
    "default_export_dir",
    "display_title",
    "evidence_sentence",
    "export_model",
    "fit_blend_weight",
    "is_exported_folder",
    "make_generator",
    "merge_adapter",
    "renormalise",
]
