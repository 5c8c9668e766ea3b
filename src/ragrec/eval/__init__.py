"""Offline evaluation: protocols, metrics, rankers and reports."""

import functools

from ragrec.eval._cf_rankers import (
    ALSConfig,
    ALSRanker,
    BPRConfig,
    BPRRanker,
    ItemKNNConfig,
    ItemKNNRanker,
)
from ragrec.eval._grid import (
    GridFile,
    PublishedRow,
    SystemRun,
    SystemSpec,
    expand_systems,
    load_grid,
)
from ragrec.eval._llm_ranker import LLMRanker, LLMRankerConfig
from ragrec.eval._protocol import (
    PROTOCOLS,
    EvalCases,
    ProtocolData,
    ProtocolStep,
    Split,
    custom_protocol,
    llamarec_protocol,
    llmrank_c20_protocol,
    prepare_protocol,
    protocol_options,
    temporal_protocol,
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
from ragrec.eval._report import ReportFiles, write_run_report
from ragrec.eval._retrieval_rankers import (
    ChannelRankerConfig,
    RetrievalRanker,
    RetrievalRankerConfig,
    channel_ranker,
)
from ragrec.eval._runner import (
    CANDIDATE_CUTOFFS,
    DEFAULT_METRICS,
    EvalResult,
    collect_environment,
    evaluate,
    git_commit,
    score_batch,
    target_ranks,
    top_positions,
    write_report,
)
from ragrec.eval._runs import Run, load_run
from ragrec.eval._stats import Comparison, compare_runs
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
from ragrec.retrieval import CHANNELS

RANKERS["retrieval"] = (RetrievalRanker, RetrievalRankerConfig)
RANKERS["llm"] = (LLMRanker, LLMRankerConfig)
RANKERS["itemknn"] = (ItemKNNRanker, ItemKNNConfig)
RANKERS["als"] = (ALSRanker, ALSConfig)
RANKERS["bpr"] = (BPRRanker, BPRConfig)
for _kind in sorted(CHANNELS):
    # each retrieval channel alone; a name an independent baseline holds gets "-channel"
    _name = _kind if _kind not in RANKERS else f"{_kind}-channel"
    RANKERS[_name] = (functools.partial(channel_ranker, _kind, name=_name), ChannelRankerConfig)

__all__ = [
    "CANDIDATE_CUTOFFS",
    "DEFAULT_METRICS",
    "MRR",
    "NDCG",
    "PROTOCOLS",
    "RANKERS",
    "ALSConfig",
    "ALSRanker",
    "AveragePrecision",
    "BPRConfig",
    "BPRRanker",
    "ChannelRankerConfig",
    "Comparison",
    "EvalCases",
    "EvalResult",
    "GridFile",
    "HitRate",
    "ItemKNNConfig",
    "ItemKNNRanker",
    "LLMRanker",
    "LLMRankerConfig",
    "Metric",
    "PopularityConfig",
    "PopularityRanker",
    "Precision",
    "ProtocolData",
    "ProtocolStep",
    "PublishedRow",
    "RandomConfig",
    "RandomRanker",
    "Ranker",
    "Recall",
    "ReportFiles",
    "RetrievalRanker",
    "RetrievalRankerConfig",
    "Run",
    "Split",
    "SystemRun",
    "SystemSpec",
    "UserBatch",
    "channel_ranker",
    "collect_environment",
    "compare_runs",
    "custom_protocol",
    "evaluate",
    "expand_systems",
    "git_commit",
    "llamarec_protocol",
    "llmrank_c20_protocol",
    "load_grid",
    "load_run",
    "make_ranker",
    "parse_metric",
    "parse_metrics",
    "prepare_protocol",
    "protocol_options",
    "score_batch",
    "target_ranks",
    "temporal_protocol",
    "top_positions",
    "write_report",
    "write_run_report",
]
