"""Offline evaluation: protocols, metrics, rankers and reports."""

import functools

from ragrec.eval._llm_ranker import LLMRanker, LLMRankerConfig
from ragrec.eval._protocol import (
    PROTOCOLS,
    EvalCases,
    ProtocolData,
    ProtocolStep,
    Split,
    llamarec_protocol,
    prepare_protocol,
)
from ragrec.eval._rankers import (
    RANKERS,
    PopularityConfig,
    PopularityRanker,
    RandomConfig,
    RandomRanker,
    Ranker,
    UserBatch,
    make_ranker,
)
from ragrec.eval._retrieval_rankers import (
    ChannelRankerConfig,
    RetrievalRanker,
    RetrievalRankerConfig,
    channel_ranker,
)
from ragrec.eval._runner import (
    DEFAULT_METRICS,
    EvalResult,
    collect_environment,
    evaluate,
    target_ranks,
    write_report,
)
from ragrec.eval.metrics import (
    MRR,
    NDCG,
    AveragePrecision,
    HitRate,
    Metric,
    Precision,
    Recall,
    parse_metric,
    parse_metrics,
)

RANKERS["retrieval"] = (RetrievalRanker, RetrievalRankerConfig)
RANKERS["llm"] = (LLMRanker, LLMRankerConfig)
for _kind in ("transition", "ease", "semantic"):
    RANKERS[_kind] = (functools.partial(channel_ranker, _kind), ChannelRankerConfig)

__all__ = [
    "DEFAULT_METRICS",
    "MRR",
    "NDCG",
    "PROTOCOLS",
    "RANKERS",
    "AveragePrecision",
    "ChannelRankerConfig",
    "EvalCases",
    "EvalResult",
    "HitRate",
    "LLMRanker",
    "LLMRankerConfig",
    "Metric",
    "PopularityConfig",
    "PopularityRanker",
    "Precision",
    "ProtocolData",
    "ProtocolStep",
    "RandomConfig",
    "RandomRanker",
    "Ranker",
    "Recall",
    "RetrievalRanker",
    "RetrievalRankerConfig",
    "Split",
    "UserBatch",
    "channel_ranker",
    "collect_environment",
    "evaluate",
    "llamarec_protocol",
    "make_ranker",
    "parse_metric",
    "parse_metrics",
    "prepare_protocol",
    "target_ranks",
    "write_report",
]
