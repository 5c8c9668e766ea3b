"""The HTTP service (``ragrec serve``): FastAPI over one :class:`~ragrec.Recommender`.

Needs the ``serve`` extra (``pip install 'ragrec[serve]'``)::

    from ragrec import Recommender
    from ragrec.serve import create_app

    app = create_app(Recommender.load("runs/store"), token="s3cret")
    # uvicorn.run(app, host="127.0.0.1", port=8000)

The request and response bodies are pydantic models (:class:`RecommendRequest`,
:class:`RecommendResponse`, ...), so Python clients can build and parse them;
:func:`to_response` turns a :class:`~ragrec.Recommendation` into the body the service
returns.
"""

from ragrec.serve._app import create_app
from ragrec.serve._convert import to_response
from ragrec.serve._load import LoadReport, run_load
from ragrec.serve._metrics import LATENCY_BUCKETS, ServiceMetrics
from ragrec.serve._models import (
    MAX_BATCH,
    ChannelScore,
    Explanation,
    FeedbackBatch,
    FeedbackBatchResult,
    FeedbackBody,
    FeedbackIn,
    FeedbackResult,
    ForgetResponse,
    HealthResponse,
    RecommendedItemOut,
    RecommendRequest,
    RecommendResponse,
)

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_BATCH",
    "ChannelScore",
    "Explanation",
    "FeedbackBatch",
    "FeedbackBatchResult",
    "FeedbackBody",
    "FeedbackIn",
    "FeedbackResult",
    "ForgetResponse",
    "HealthResponse",
    "LoadReport",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItemOut",
    "ServiceMetrics",
    "create_app",
    "run_load",
    "to_response",
]
