"""Fine-tuning the ranking LLM on the store's own logs and feedback (verbalizer
objective: cross-entropy over the candidate labels at the answer position)."""

from ragrec.tuning._config import TUNE_PROMPT, TuneConfig, parse_tune_config
from ragrec.tuning._examples import (
    CandidatesFn,
    FeedbackSignal,
    TuneExample,
    build_examples,
    feedback_examples,
    holdout_rows,
)
from ragrec.tuning._run import forget_tuning_user, incremental_base, tune_store
from ragrec.tuning._trainer import TuneProgress, Tuner, TuneResult, latest_run

__all__ = [
    "TUNE_PROMPT",
    "CandidatesFn",
    "FeedbackSignal",
    "TuneConfig",
    "TuneExample",
    "TuneProgress",
    "TuneResult",
    "Tuner",
    "build_examples",
    "feedback_examples",
    "forget_tuning_user",
    "holdout_rows",
    "incremental_base",
    "latest_run",
    "parse_tune_config",
    "tune_store",
]
