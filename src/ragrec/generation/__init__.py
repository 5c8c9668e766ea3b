"""Generation: LLM backends behind one protocol, verbalizer ranking and the blend."""

from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    BaseGenerator,
    BaseTokenizer,
    GenerationInfo,
    GenerationRequest,
    Generator,
    GeneratorConfig,
    renormalise,
    resolve_device,
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
    load_trainable,
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
from ragrec.generation._transformers import HFTokenizer, bundled_model_path, resolve_adapter

__all__ = [
    "BUNDLED_MODEL",
    "BackendError",
    "BaseGenerator",
    "BaseTokenizer",
    "ExplainConfig",
    "ExplainItem",
    "Explainer",
    "ExplanationResult",
    "ExportResult",
    "GenerationInfo",
    "GenerationRequest",
    "Generator",
    "GeneratorConfig",
    "HFTokenizer",
    "LLMScores",
    "RerankConfig",
    "RerankRequest",
    "TitleIndex",
    "VerbalizerRanker",
    "blend_scores",
    "bundled_model_path",
    "content_free_prior",
    "default_export_dir",
    "display_title",
    "evidence_sentence",
    "export_model",
    "fit_blend_weight",
    "is_exported_folder",
    "load_trainable",
    "make_generator",
    "merge_adapter",
    "renormalise",
    "resolve_adapter",
    "resolve_device",
]
