"""Verbalizer re-ranking of labelled candidates, and the blend with retrieval scores."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from ragrec._settings import Settings
from ragrec.errors import ConfigError, RagrecError
from ragrec.generation._base import Generator
from ragrec.prompting import (
    ExemplarPool,
    Message,
    PromptBuilder,
    PromptTooLongError,
    RenderedPrompt,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LLMScores",
    "RerankConfig",
    "RerankRequest",
    "VerbalizerRanker",
    "blend_scores",
    "content_free_prior",
    "fit_blend_weight",
]


class RerankConfig(Settings):
    """Configuration of :class:`VerbalizerRanker`."""

    permutations: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Candidate orders scored and averaged (cancels position bias; costs "
        "one forward pass each).",
    )
    calibrate: bool = Field(
        default=False,
        description="Subtract each label's content-free prior (its log-probability when "
        "history and candidates all read N/A) from the label scores: cancels a fixed "
        "position bias without a fit; one extra forward pass per candidate count.",
    )
    blend_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of the LLM in the final score (0: retrieval order). Fit it on "
        "validation data with fit_blend_weight; the evaluation runner does.",
    )


@dataclass(frozen=True)
class LLMScores:
    """The LLM's view of one candidate list.

    Attributes:
        item_ids: Candidates in retrieval order.
        logprobs: Per candidate, its label log-probability averaged over permutations
            (renormalised over the labels shown); all zeros when ``degraded``.
        prompts: The rendered prompts (one per permutation).
        seconds: Wall time.
        degraded: True when the backend failed and no LLM scores exist.
        reason: Why it degraded.
    """

    item_ids: tuple[Any, ...]
    logprobs: np.ndarray
    prompts: tuple[RenderedPrompt, ...]
    seconds: float
    degraded: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class RerankRequest:
    """One candidate list for the LLM to rank.

    Attributes:
        user_key: Whose list it is (seeds the label shuffle; exemplars of this user are
            never shown to them).
        history: ``(item id, title)`` of the user's history, oldest first.
        candidates: ``(item id, title)`` in retrieval order.
        query: The user's free-text request, if any.
    """

    user_key: Any
    history: Sequence[tuple[Any, str]]
    candidates: Sequence[tuple[Any, str]]
    query: str | None = None

    @classmethod
    def of(cls, value: RerankRequest | Mapping[str, Any]) -> RerankRequest:
        """A request from itself or its keyword form (``{"user_key": ..., ...}``).

        Raises:
            ConfigError: A mapping with unknown or missing keys.
        """
        if isinstance(value, RerankRequest):
            return value
        try:
            return cls(**value)
        except TypeError as exc:
            raise ConfigError(
                f"rerank request {sorted(value)!r}: {exc}; pass user_key, history, "
                "candidates and optionally query"
            ) from None


def content_free_prior(generator: Generator, builder: PromptBuilder, n: int) -> np.ndarray:
    """The label log-probabilities (renormalised over ``n`` labels) of a prompt whose
    history and ``n`` candidates all read ``N/A`` (all shown at rank 1 when the builder
    shows ranks): the model's preference for each label when there is nothing to choose
    between (contextual calibration).

    Raises:
        RagrecError: The backend failed.
    """
    prompt = builder.render(
        history=[("n/a", "N/A")],
        candidates=[(f"n/a-{i}", "N/A") for i in range(n)],
        ranks=[1] * n,
    )
    return np.asarray(generator.label_logprobs([prompt])[0, :n], dtype=np.float64)


class VerbalizerRanker:
    """Scores candidates by the next-token log-probability of their label (one forward
    pass per permutation, every candidate scored, no invalid output possible).

    Args:
        generator: The LLM backend.
        builder: Renders prompts with the generator's tokenizer.
        config: Permutations and blend weight.
        exemplars: Few-shot exemplars; each request gets ``exemplars.config.k`` of them
            (selected for its history, never the user's own), rendered with the builder's
            template and placed in the cached prompt prefix. ``None``: zero-shot.
    """

    def __init__(
        self,
        generator: Generator,
        builder: PromptBuilder,
        config: RerankConfig | None = None,
        *,
        exemplars: ExemplarPool | None = None,
    ) -> None:
        self.generator = generator
        self.builder = builder
        self.config = config or RerankConfig()
        self.exemplars = exemplars
        self._priors: dict[int, np.ndarray] = {}

    def prior(self, n: int) -> np.ndarray:
        """The content-free prior of ``n`` labels (zeros unless ``calibrate``), cached."""
        if not self.config.calibrate:
            return np.zeros(n)
        if n not in self._priors:
            self._priors[n] = content_free_prior(self.generator, self.builder, n)
        return self._priors[n]

    def shots(
        self, *, user_key: Any, history: Sequence[tuple[Any, str]]
    ) -> list[tuple[str, tuple[Message, Message]]]:
        """The few-shot turns for one request: ``(exemplar id, (user, assistant))``."""
        pool = self.exemplars
        if pool is None or pool.config.k == 0 or len(pool) == 0:
            return []
        template = self.builder.template
        chosen = pool.select(
            [title for _, title in history],
            tokenizer=self.builder.tokenizer,
            template=template,
            exclude_user=user_key,
        )
        return [(e.id, pool.to_messages(e, template)) for e in chosen]

    def prompts(
        self,
        *,
        user_key: Any,
        history: Sequence[tuple[Any, str]],
        candidates: Sequence[tuple[Any, str]],
        query: str | None = None,
    ) -> tuple[list[RenderedPrompt], list[np.ndarray]]:
        """The prompts (one per permutation, all with the same exemplars) and each one's
        candidate order."""
        orders = [
            self.builder.order(user_key, len(candidates), p)
            for p in range(self.config.permutations)
        ]
        shots = self.shots(user_key=user_key, history=history)
        prompts = [
            self.builder.render(
                history=history,
                candidates=[candidates[i] for i in order],
                query=query,
                exemplars=shots,
                ranks=[int(i) + 1 for i in order],
            )
            for order in orders
        ]
        return prompts, orders

    def score_batch(
        self,
        batch: Sequence[RerankRequest | Mapping[str, Any]],
    ) -> list[LLMScores]:
        """Score several candidate lists (:class:`RerankRequest`, or their keyword
        form). A backend failure degrades every request of the batch, and a prompt that
        cannot fit its budget degrades its own request (flagged, with the reason),
        instead of raising."""
        start = time.perf_counter()
        requests = [RerankRequest.of(r) for r in batch]
        rendered: list[tuple[list[RenderedPrompt], list[np.ndarray]] | str] = []
        for r in requests:
            try:
                rendered.append(
                    self.prompts(
                        user_key=r.user_key,
                        history=r.history,
                        candidates=r.candidates,
                        query=r.query,
                    )
                )
            except PromptTooLongError as exc:
                rendered.append(f"PromptTooLongError: {exc}")
        flat = [p for item in rendered if not isinstance(item, str) for p in item[0]]
        failure: str | None = None
        logprobs = np.zeros((0, 0))
        priors: dict[int, np.ndarray] = {}
        if flat:
            try:
                logprobs = self.generator.label_logprobs(flat)
                priors = {len(r.candidates): self.prior(len(r.candidates)) for r in requests}
            except (RagrecError, RuntimeError, OSError, TimeoutError) as exc:
                logger.warning("LLM ranking degraded to retrieval order: %s", exc)
                failure = f"{type(exc).__name__}: {exc}"
        seconds = (time.perf_counter() - start) / max(1, len(requests))
        out = []
        row = 0
        for r, item in zip(requests, rendered, strict=True):
            ids = tuple(i for i, _ in r.candidates)
            n = len(ids)
            if isinstance(item, str) or failure is not None:
                prompts = () if isinstance(item, str) else tuple(item[0])
                reason = item if isinstance(item, str) else failure
                out.append(LLMScores(ids, np.zeros(n), prompts, seconds, True, reason))
                continue
            prompts_list, orders = item
            total = np.zeros(n)
            for order in orders:
                # the candidate shown under label j is candidates[order[j]]
                total[order] += logprobs[row, :n] - priors[n]
                row += 1
            out.append(LLMScores(ids, total / len(orders), tuple(prompts_list), seconds))
        return out


def _zscore(values: np.ndarray) -> np.ndarray:
    std = float(values.std())
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


def blend_scores(retrieval: np.ndarray, llm: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - w) * z(retrieval) + w * z(llm)``, z-scored within the list.

    With ``w = 0`` the order is the retrieval order; with ``w = 1`` the LLM's.
    """
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"blend weight {weight} must be in [0, 1]")
    retrieval = np.asarray(retrieval, dtype=np.float64)
    llm = np.asarray(llm, dtype=np.float64)
    if retrieval.shape != llm.shape:
        raise ConfigError(f"retrieval scores {retrieval.shape} and LLM scores {llm.shape} differ")
    # Ties in the blend keep retrieval order through a tiny rank-based tie-break.
    tie = -np.arange(len(retrieval)) * 1e-9
    return (1 - weight) * _zscore(retrieval) + weight * _zscore(llm) + tie


def fit_blend_weight(
    retrieval: Sequence[np.ndarray],
    llm: Sequence[np.ndarray],
    targets: Sequence[int],
    *,
    grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 21), 2)),
    k: int = 10,
) -> tuple[float, dict[float, float]]:
    """The blend weight with the best mean NDCG@k on held-out lists.

    Args:
        retrieval: Per list, retrieval scores in retrieval order.
        llm: Per list, LLM log-probabilities aligned with ``retrieval``.
        targets: Per list, the index of the held-out item, or -1 when it is not in the
            list (counts as 0 for every weight).
        grid: Weights tried; ties go to the smaller weight (closer to retrieval).
        k: NDCG cutoff.

    Returns:
        The best weight and the NDCG@k of every weight tried.
    """
    table: dict[float, float] = {}
    for w in grid:
        gains = []
        for ret, lm, t in zip(retrieval, llm, targets, strict=True):
            if t < 0:
                gains.append(0.0)
                continue
            scores = blend_scores(ret, lm, float(w))
            rank = 1 + int((scores > scores[t]).sum())
            gains.append(1.0 / np.log2(rank + 1) if rank <= k else 0.0)
        table[float(w)] = float(np.mean(gains)) if gains else 0.0
    best = max(table, key=lambda w: (table[w], -w))
    return best, table
