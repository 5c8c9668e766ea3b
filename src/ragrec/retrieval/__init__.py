"""Retrieval: embedders, vector indexes, channels, fusion and filters."""

from ragrec.retrieval._channel_base import (
    CHANNELS,
    Channel,
    ChannelConfig,
    ChannelContext,
    DenseChannel,
    register_channel,
)
from ragrec.retrieval._channels import (
    EaseChannel,
    EaseConfig,
    PopularityChannel,
    PopularityChannelConfig,
    TransitionChannel,
    TransitionConfig,
)
from ragrec.retrieval._collab import (
    ALSChannel,
    ALSChannelConfig,
    BPRChannel,
    BPRChannelConfig,
    ItemKNNChannel,
    ItemKNNChannelConfig,
)
from ragrec.retrieval._embedders import (
    DEFAULT_EMBEDDER,
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    ItemTextConfig,
    SentenceTransformerEmbedder,
    item_texts,
    make_embedder,
)
from ragrec.retrieval._faiss_index import FaissIndex
from ragrec.retrieval._fusion import ChannelWeights, Filters, FusionConfig, blocked_positions, fuse
from ragrec.retrieval._fusion_fit import (
    FusionFit,
    FusionFitConfig,
    apply_fusion,
    fit_fusion,
    holdout_last,
)
from ragrec.retrieval._index import load_index, make_index
from ragrec.retrieval._index_base import (
    IndexConfig,
    NumpyIndex,
    SearchResult,
    VectorIndex,
    VectorIndexError,
)
from ragrec.retrieval._items import ItemEmbeddings, catalog_fingerprint
from ragrec.retrieval._retriever import (
    ChannelSpec,
    Retriever,
    RetrieverConfig,
    StaleRetrieverStateError,
    data_fingerprint,
)
from ragrec.retrieval._semantic import SemanticChannel, SemanticConfig
from ragrec.retrieval._sequential import SASRecChannel, SASRecConfig
from ragrec.retrieval._types import (
    Candidate,
    CandidateList,
    ChannelCandidates,
    ChannelShare,
    Evidence,
    HistoryEvidence,
    Provenance,
    RetrievalQuery,
)
from ragrec.retrieval._vector import VectorChannel

__all__ = [
    "CHANNELS",
    "DEFAULT_EMBEDDER",
    "ALSChannel",
    "ALSChannelConfig",
    "BPRChannel",
    "BPRChannelConfig",
    "CachedEmbedder",
    "Candidate",
    "CandidateList",
    "Channel",
    "ChannelCandidates",
    "ChannelConfig",
    "ChannelContext",
    "ChannelShare",
    "ChannelSpec",
    "ChannelWeights",
    "DenseChannel",
    "EaseChannel",
    "EaseConfig",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingCache",
    "Evidence",
    "FaissIndex",
    "Filters",
    "FusionConfig",
    "FusionFit",
    "FusionFitConfig",
    "HistoryEvidence",
    "IndexConfig",
    "ItemEmbeddings",
    "ItemKNNChannel",
    "ItemKNNChannelConfig",
    "ItemTextConfig",
    "NumpyIndex",
    "PopularityChannel",
    "PopularityChannelConfig",
    "Provenance",
    "RetrievalQuery",
    "Retriever",
    "RetrieverConfig",
    "SASRecChannel",
    "SASRecConfig",
    "SearchResult",
    "SemanticChannel",
    "SemanticConfig",
    "SentenceTransformerEmbedder",
    "StaleRetrieverStateError",
    "TransitionChannel",
    "TransitionConfig",
    "VectorChannel",
    "VectorIndex",
    "VectorIndexError",
    "apply_fusion",
    "blocked_positions",
    "catalog_fingerprint",
    "data_fingerprint",
    "fit_fusion",
    "fuse",
    "holdout_last",
    "item_texts",
    "load_index",
    "make_embedder",
    "make_index",
    "register_channel",
]
