"""ragrec: retrieval-augmented, prompt-based recommendation with a generative LLM.

The stage packages are :mod:`ragrec.data`, :mod:`ragrec.retrieval`,
:mod:`ragrec.prompting`, :mod:`ragrec.generation`, :mod:`ragrec.feedback` and
:mod:`ragrec.eval`; this module re-exports the objects most programs start from.
"""

from ragrec._recommender import (
    FeedbackOutcome,
    Recommendation,
    RecommendedItem,
    Recommender,
    RecommenderConfig,
)
from ragrec._version import __version__
from ragrec.config import RagrecConfig, load_config
from ragrec.data import Catalog, Interactions, load_movielens
from ragrec.errors import ConfigError, DatasetUnavailableError, DataValidationError, RagrecError

__all__ = [
    "Catalog",
    "ConfigError",
    "DataValidationError",
    "DatasetUnavailableError",
    "FeedbackOutcome",
    "Interactions",
    "RagrecConfig",
    "RagrecError",
    "Recommendation",
    "RecommendedItem",
    "Recommender",
    "RecommenderConfig",
    "__version__",
    "load_config",
    "load_movielens",
]
