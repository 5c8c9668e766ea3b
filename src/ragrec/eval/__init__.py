"""Offline evaluation: protocols, metrics, rankers and reports.

The names below are imported on first use (``from ragrec.eval import evaluate`` imports
the runner, not the LLM ranker), so that ``ragrec.config``, which holds
:class:`EvalConfig`, does not load every ranker.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragrec.eval._cf_rankers import (
        ALSConfig,
        ALSRanker,
        BPRConfig,
        BPRRanker,
        ItemKNNConfig,
        ItemKNNRanker,
    )
    from ragrec.eval._config import DEFAULT_METRICS, EvalConfig
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
        PopularityConfig,
        PopularityRanker,
        RandomConfig,
        RandomRanker,
        Ranker,
        UserBatch,
    )
    from ragrec.eval._registry import RANKERS, known_ranker, make_ranker
    from ragrec.eval._report import ReportFiles, write_run_report
    from ragrec.eval._retrieval_rankers import (
        ChannelRankerConfig,
        RetrievalRanker,
        RetrievalRankerConfig,
        channel_ranker,
    )
    from ragrec.eval._runner import (
        CANDIDATE_CUTOFFS,
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

_EXPORTS: dict[str, tuple[str, ...]] = {
    "ragrec.eval._cf_rankers": (
        "ALSConfig",
        "ALSRanker",
        "BPRConfig",
        "BPRRanker",
        "ItemKNNConfig",
        "ItemKNNRanker",
    ),
    "ragrec.eval._config": (
        "DEFAULT_METRICS",
        "EvalConfig",
    ),
    "ragrec.eval._grid": (
        "GridFile",
        "PublishedRow",
        "SystemRun",
        "SystemSpec",
        "expand_systems",
        "load_grid",
    ),
    "ragrec.eval._llm_ranker": (
        "LLMRanker",
        "LLMRankerConfig",
    ),
    "ragrec.eval._protocol": (
        "PROTOCOLS",
        "EvalCases",
        "ProtocolData",
        "ProtocolStep",
        "Split",
        "custom_protocol",
        "llamarec_protocol",
        "llmrank_c20_protocol",
        "prepare_protocol",
        "protocol_options",
        "temporal_protocol",
    ),
    "ragrec.eval._rankers": (
        "PopularityConfig",
        "PopularityRanker",
        "RandomConfig",
        "RandomRanker",
        "Ranker",
        "UserBatch",
    ),
    "ragrec.eval._registry": (
        "RANKERS",
        "known_ranker",
        "make_ranker",
    ),
    "ragrec.eval._report": (
        "ReportFiles",
        "write_run_report",
    ),
    "ragrec.eval._runs": (
        "Run",
        "load_run",
    ),
    "ragrec.eval._stats": (
        "Comparison",
        "compare_runs",
    ),
    "ragrec.eval._retrieval_rankers": (
        "ChannelRankerConfig",
        "RetrievalRanker",
        "RetrievalRankerConfig",
        "channel_ranker",
    ),
    "ragrec.eval._runner": (
        "CANDIDATE_CUTOFFS",
        "EvalResult",
        "collect_environment",
        "evaluate",
        "git_commit",
        "score_batch",
        "target_ranks",
        "top_positions",
        "write_report",
    ),
    "ragrec.eval.metrics": (
        "MRR",
        "NDCG",
        "AveragePrecision",
        "HitRate",
        "Metric",
        "Precision",
        "Recall",
        "parse_metric",
        "parse_metrics",
    ),
}

_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


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
    "EvalConfig",
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
    "known_ranker",
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
