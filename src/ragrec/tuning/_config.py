"""Configuration of a tuning run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ragrec._settings import Settings
from ragrec.errors import ConfigError, describe_validation_error
from ragrec.prompting import PromptConfig

__all__ = ["TUNE_PROMPT", "TuneConfig", "parse_tune_config"]

TUNE_PROMPT = PromptConfig(
    max_history=10, max_title_tokens=16, max_prompt_tokens=640, shuffle=False
)
"""The default prompt of tuning examples: 10 history titles of at most 16 tokens (about
300-400 tokens a prompt, so a CPU step stays near a second). Candidates are shuffled by
the example builder, not the prompt builder. Score with the same budgets."""


class TuneConfig(Settings):
    """Supervised fine-tuning of the ranking model with the verbalizer objective:
    cross-entropy over the candidate labels' logits at the answer position."""

    method: Literal["lora", "full"] = Field(
        default="lora",
        description="lora: train a peft adapter on the attention projections; full: train "
        "every weight (writes a whole model folder).",
    )
    lora_r: int = Field(default=8, ge=1, le=256, description="lora: adapter rank.")
    lora_alpha: int = Field(default=16, ge=1, description="lora: scaling numerator.")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="lora: dropout.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        description="lora: module names the adapter wraps.",
    )
    train_layers: int | None = Field(
        default=None,
        ge=1,
        description="Train only the top N decoder layers (lora: adapters there only; full: "
        "every other weight frozen). Backward then stops at the lowest trained layer, "
        "which cuts a CPU step's cost by about (1 - N/layers) * 2/3. None: all layers.",
    )
    learning_rate: float | None = Field(
        default=None, gt=0, description="AdamW step size (None: 3e-4 for lora, 2e-5 for full)."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    grad_accum: int = Field(default=8, ge=1, description="Examples per optimizer step.")
    warmup_steps: int = Field(default=5, ge=0, description="Optimizer steps of linear warmup.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    epochs: int = Field(default=1, ge=1, description="Passes over the examples.")
    max_examples: int | None = Field(
        default=2000, ge=1, description="Training examples built (None: all sliding targets)."
    )
    max_minutes: float | None = Field(
        default=25.0, gt=0, description="Stop (and save) after this much training time."
    )
    examples_per_user: int = Field(
        default=4, ge=1, description="Sliding targets sampled per training user."
    )
    holdout_last: int = Field(
        default=0,
        ge=0,
        description="Sample targets only from each user's last N items, ranked by a "
        "retriever refit without them (holdout_rows), so the ranking the model learns to "
        "trust is as good as at serving time, not inflated by having seen the answers. "
        "0: targets anywhere in the sequence, ranked by the retriever as fit. Use it "
        "with candidate_order='retrieval'.",
    )
    min_history: int = Field(default=3, ge=1, description="History items a target needs before it.")
    n_candidates: int = Field(default=20, ge=2, le=26, description="Candidates per example.")
    random_negatives: int = Field(
        default=0,
        ge=0,
        description="Of the n_candidates - 1 wrong candidates, how many are random unseen "
        "items instead of the retriever's hard negatives.",
    )
    candidate_order: Literal["shuffled", "retrieval"] = Field(
        default="shuffled",
        description="Label order of an example's candidates. shuffled: a seeded random "
        "order, so the model can only learn from titles (rank with prompt.shuffle on). "
        "retrieval: the retriever's order, so label A is its best guess and the model can "
        "learn how far to trust it (rank with prompt.shuffle off, as the pipeline "
        "presents retrieval candidates). With only hard negatives, examples whose target "
        "the retriever left out of its top n_candidates are skipped (the pipeline never "
        "shows such a target).",
    )
    feedback: bool = Field(
        default=True,
        description="Turn stored feedback into examples: positive events as targets, "
        "dislikes as unlikelihood terms.",
    )
    unlikelihood_weight: float = Field(
        default=1.0, ge=0, description="Weight of -log(1 - p(disliked item's label))."
    )
    checkpoint_every: int = Field(
        default=25, ge=1, description="Optimizer steps between resumable checkpoints."
    )
    log_every: int = Field(default=5, ge=1, description="Optimizer steps between log lines.")
    seed: int = Field(default=0, description="Seed of example sampling and shuffles.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when torch sees a GPU, else cpu."
    )
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads; None leaves torch's default."
    )
    prompt: PromptConfig = Field(
        default=TUNE_PROMPT, description="Prompt budgets of the examples (shuffle is ignored)."
    )

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("target_modules is empty; name at least one module, e.g. q_proj")
        return value

    @model_validator(mode="after")
    def _negatives_fit(self) -> TuneConfig:
        if self.random_negatives > self.n_candidates - 1:
            raise ValueError(
                f"random_negatives={self.random_negatives} exceeds the {self.n_candidates - 1} "
                f"wrong candidates of n_candidates={self.n_candidates}; lower it"
            )
        return self

    @property
    def lr(self) -> float:
        """The learning rate in effect."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 3e-4 if self.method == "lora" else 2e-5


def parse_tune_config(config: TuneConfig | Mapping[str, Any] | None) -> TuneConfig:
    """A :class:`TuneConfig` from itself, its dict form or None (defaults).

    Raises:
        ConfigError: Unknown key or invalid value (names the field, the value and why).
    """
    if isinstance(config, TuneConfig):
        return config
    try:
        return TuneConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"tune config: {describe_validation_error(exc)}; see ragrec.tuning.TuneConfig "
            "(method is 'lora' or 'full')"
        ) from exc
