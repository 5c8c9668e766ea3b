"""Tests for ragrec.generation._rerank: verbalizer scores with the real model, the
degraded path, and the blend with retrieval scores."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.generation import BackendError
from ragrec.generation._rerank import (
    LLMScores,
    RerankConfig,
    VerbalizerRanker,
    blend_scores,
    content_free_prior,
    fit_blend_weight,
)
from ragrec.generation._transformers import HFTokenizer, TransformersGenerator
from ragrec.prompting import PromptBuilder, PromptConfig

from .conftest import FailingGenerator, real_generator

REQUESTS = [
    {
        "user_key": 7,
        "history": [(11, "Heat (1995)"), (12, "Casablanca (1942)"), (13, "Alien (1979)")],
        "candidates": [
            (1, "Toy Story (1995)"),
            (2, "Jumanji (1995)"),
            (3, "The Matrix (1999)"),
            (4, "Fargo (1996)"),
            (5, "Groundhog Day (1993)"),
            (6, "Blade Runner (1982)"),
        ],
    },
    {
        "user_key": "user-b",
        "history": [(21, "Finding Nemo (2003)")],
        "candidates": [
            (31, "Up (2009)"),
            (32, "Psycho (1960)"),
            (33, "The Shining (1980)"),
            (34, "Spirited Away (2001)"),
        ],
    },
]


def _ranker(generator: object, tokenizer: HFTokenizer, permutations: int = 2) -> VerbalizerRanker:
    builder = PromptBuilder(tokenizer, PromptConfig(seed=3))
    return VerbalizerRanker(generator, builder, RerankConfig(permutations=permutations))  # type: ignore[arg-type]


class TestVerbalizerRanker:
    def test_scores_are_label_logprobs_averaged_over_permutations(
        self, generator: TransformersGenerator, tokenizer: HFTokenizer
    ) -> None:
        ranker = _ranker(generator, tokenizer)
        scores = ranker.score_batch(REQUESTS)
        assert len(scores) == len(REQUESTS)
        flat = [p for s in scores for p in s.prompts]
        per_prompt = generator.label_logprobs(flat)
        row = 0
        for request, result in zip(REQUESTS, scores, strict=True):
            ids = tuple(i for i, _ in request["candidates"])
            assert isinstance(result, LLMScores)
            assert result.item_ids == ids  # retrieval order, not a prompt's order
            assert not result.degraded
            assert result.reason is None
            assert result.seconds > 0
            assert len(result.prompts) == 2
            orders = [p.candidate_ids for p in result.prompts]
            assert orders[0] != orders[1]  # the two permutations differ
            expected = np.zeros(len(ids))
            for p, prompt in enumerate(result.prompts):
                assert sorted(prompt.candidate_ids) == sorted(ids)
                assert prompt.candidate_ids == tuple(
                    ids[j] for j in ranker.builder.order(request["user_key"], len(ids), p)
                )
                for k, item in enumerate(ids):
                    label = prompt.candidate_ids.index(item)
                    assert prompt.label_of(item) == prompt.labels[label]
                    expected[k] += per_prompt[row, label] / 2
                row += 1
            np.testing.assert_allclose(result.logprobs, expected, atol=1e-5)
            assert np.isfinite(result.logprobs).all()
            assert (result.logprobs < 0).all()

    @pytest.mark.parametrize(
        "error",
        [
            BackendError("server at 127.0.0.1:9 refused the connection"),
            TimeoutError("no answer in 30 s"),
            RuntimeError("CUDA out of memory"),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_backend_failure_degrades_to_retrieval_order(
        self, tokenizer: HFTokenizer, error: Exception, caplog: pytest.LogCaptureFixture
    ) -> None:
        failing = FailingGenerator(tokenizer, error)
        with caplog.at_level(logging.WARNING, logger="ragrec.generation._rerank"):
            scores = _ranker(failing, tokenizer).score_batch(REQUESTS)
        assert failing.calls == 1
        assert "degraded" in caplog.text
        for request, result in zip(REQUESTS, scores, strict=True):
            n = len(request["candidates"])
            assert result.degraded
            assert result.reason == f"{type(error).__name__}: {error}"
            assert result.item_ids == tuple(i for i, _ in request["candidates"])
            np.testing.assert_array_equal(result.logprobs, np.zeros(n))
            assert len(result.prompts) == 2  # rendered before the backend failed
            order = np.argsort(-blend_scores(np.linspace(1, 0, n), result.logprobs, 1.0))
            np.testing.assert_array_equal(order, np.arange(n))

    def test_calibration_subtracts_the_content_free_prior(
        self, generator: TransformersGenerator, tokenizer: HFTokenizer
    ) -> None:
        builder = PromptBuilder(tokenizer, PromptConfig(seed=3))
        plain = VerbalizerRanker(generator, builder, RerankConfig(permutations=1))
        calibrated = VerbalizerRanker(
            generator, builder, RerankConfig(permutations=1, calibrate=True)
        )
        prior = content_free_prior(generator, builder, 6)
        assert prior.shape == (6,)
        np.testing.assert_allclose(np.exp(prior).sum(), 1.0, atol=1e-4)
        assert prior.max() - prior.min() > 0.1  # the bias being cancelled is real
        before, after = plain.score_batch(REQUESTS[:1])[0], calibrated.score_batch(REQUESTS[:1])[0]
        order = builder.order(7, 6, 0)
        expected = before.logprobs.copy()
        expected[order] -= prior
        np.testing.assert_allclose(after.logprobs, expected, atol=1e-4)
        assert calibrated.prior(6) is calibrated.prior(6)  # one forward pass, cached

    def test_shown_ranks_are_retrieval_ranks_under_shuffled_labels(
        self, generator: TransformersGenerator, tokenizer: HFTokenizer
    ) -> None:
        builder = PromptBuilder(tokenizer, PromptConfig(seed=3, show_rank=True))
        ranker = VerbalizerRanker(generator, builder, RerankConfig(permutations=2))
        scores = ranker.score_batch(REQUESTS)
        for request, result in zip(REQUESTS, scores, strict=True):
            ids = [i for i, _ in request["candidates"]]
            for prompt in result.prompts:
                for item, (_, title) in zip(ids, request["candidates"], strict=True):
                    # candidates arrive in retrieval order: the k-th shows rank k
                    line = f"{prompt.label_of(item)}. {title} [rank {ids.index(item) + 1}]"
                    assert line in prompt.text
            assert not result.degraded
        # the ranks change what the model reads, so its scores
        plain = _ranker(generator, tokenizer).score_batch(REQUESTS[:1])[0]
        assert not np.allclose(plain.logprobs, scores[0].logprobs, atol=1e-3)
        # the content-free prior shows every N/A candidate at the same rank
        assert content_free_prior(generator, builder, 4).shape == (4,)

    def test_no_requests(self, tokenizer: HFTokenizer) -> None:
        assert _ranker(FailingGenerator(tokenizer), tokenizer).score_batch([]) == []


class TestBlendScores:
    RETRIEVAL = np.array([0.9, 0.8, 0.5, 0.4, 0.1])
    LLM = np.array([-3.0, -0.2, -1.0, -0.1, -2.0])

    def test_weight_zero_keeps_retrieval_order(self) -> None:
        out = blend_scores(self.RETRIEVAL, self.LLM, 0.0)
        np.testing.assert_array_equal(np.argsort(-out, kind="stable"), np.arange(5))

    def test_weight_one_gives_llm_order(self) -> None:
        out = blend_scores(self.RETRIEVAL, self.LLM, 1.0)
        np.testing.assert_array_equal(np.argsort(-out, kind="stable"), [3, 1, 2, 4, 0])

    def test_llm_ties_keep_retrieval_order(self) -> None:
        out = blend_scores(self.RETRIEVAL, np.zeros(5), 1.0)
        np.testing.assert_array_equal(np.argsort(-out, kind="stable"), np.arange(5))

    def test_inputs_not_modified(self) -> None:
        ret, llm = self.RETRIEVAL.copy(), self.LLM.copy()
        blend_scores(ret, llm, 0.5)
        np.testing.assert_array_equal(ret, self.RETRIEVAL)
        np.testing.assert_array_equal(llm, self.LLM)

    @pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
    def test_invalid_weight(self, weight: float) -> None:
        with pytest.raises(ConfigError, match="blend weight"):
            blend_scores(self.RETRIEVAL, self.LLM, weight)

    def test_shape_mismatch(self) -> None:
        with pytest.raises(ConfigError, match="differ"):
            blend_scores(self.RETRIEVAL, self.LLM[:3], 0.5)


def _synthetic(
    informative: bool, n_lists: int = 40, n: int = 20, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Lists whose target sits at a random retrieval position; the LLM scores it highest
    (informative) or scores everything at random (noise)."""
    rng = np.random.default_rng(seed)
    retrieval, llm, targets = [], [], []
    for _ in range(n_lists):
        ret = np.sort(rng.random(n))[::-1]
        target = int(rng.integers(0, n))
        lm = rng.normal(size=n)
        if informative:
            lm[target] = lm.max() + 1.0
        retrieval.append(ret)
        llm.append(lm)
        targets.append(target)
    return retrieval, llm, targets


class TestFitBlendWeight:
    def test_informative_llm_gets_weight(self) -> None:
        weight, table = fit_blend_weight(*_synthetic(informative=True))
        assert weight > 0
        assert table[weight] > table[0.0]
        assert table[1.0] == pytest.approx(1.0)  # the LLM alone ranks every target first

    def test_noise_llm_gets_zero(self) -> None:
        _, llm, _ = _synthetic(informative=False)
        # retrieval ranks every target first, by a wide margin
        retrieval = [np.r_[10.0, np.linspace(1, 0, len(x) - 1)] for x in llm]
        targets = [0] * len(retrieval)
        weight, table = fit_blend_weight(retrieval, llm, targets)
        assert weight == 0.0
        assert table[0.0] == pytest.approx(1.0)
        assert table[0.05] == pytest.approx(1.0)  # ties go to the smaller weight

    def test_table_covers_the_grid_and_is_in_unit_interval(self) -> None:
        weight, table = fit_blend_weight(*_synthetic(informative=False))
        assert list(table) == [round(w, 2) for w in np.linspace(0, 1, 21)]
        assert all(0.0 <= v <= 1.0 for v in table.values())
        assert table[weight] == max(table.values())

    def test_missing_targets_count_as_zero(self) -> None:
        retrieval, llm, targets = _synthetic(informative=True, n_lists=4)
        weight, table = fit_blend_weight(retrieval, llm, [-1, -1, -1, -1])
        assert weight == 0.0
        assert set(table.values()) == {0.0}
        _, half = fit_blend_weight(retrieval, llm, [targets[0], targets[1], -1, -1])
        assert half[1.0] == pytest.approx(0.5)

    def test_degraded_lists_fit_zero(self) -> None:
        retrieval, llm, targets = _synthetic(informative=True)
        zeros = [np.zeros_like(x) for x in llm]
        weight, table = fit_blend_weight(retrieval, zeros, targets)
        assert weight == 0.0
        assert len(set(table.values())) == 1


class TestTrivialReasons:
    """A rewrite must explain something: not a few words, not the template's placeholder,
    and it must end as a sentence."""

    @pytest.mark.parametrize(
        ("reason", "error"),
        [
            ("I", "word"),
            ("Heat.", "word"),
            ("a title from the history", "placeholder"),
            ("A title from the history.", "placeholder"),
            ("...", "word"),
            ("Same director as your favourites", "unfinished"),
            ("Same director as your favourites.", None),
            ("Another tense heist thriller!", None),
        ],
    )
    def test_reason_content(self, reason: str, error: str | None) -> None:
        from ragrec.generation import Explainer

        explainer = Explainer(FailingGenerator(real_generator().tokenizer))
        if error is None:
            assert explainer.validate(reason, item_title="Heat (1995)", evidence=None) == reason
        else:
            with pytest.raises(ValueError, match=error):
                explainer.validate(reason, item_title="Heat (1995)", evidence=None)


def test_a_reason_that_restates_the_title_is_rejected() -> None:
    from ragrec.generation import Explainer

    explainer = Explainer(FailingGenerator(real_generator().tokenizer))
    echo = "You may enjoy American Pie (1999)."
    with pytest.raises(ValueError, match="restates"):
        explainer.validate(echo, item_title="American Pie (1999)", evidence=None)
    fine = "You may enjoy American Pie (1999), another raunchy teen comedy."
    assert explainer.validate(fine, item_title="American Pie (1999)", evidence=None) == fine
