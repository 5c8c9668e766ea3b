"""A tuned LoRA adapter served by vLLM for real: ``ragrec tune``'s peft folder loads as a
vLLM LoRA adapter and scores like the transformers backend with the same adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.tuning.conftest import popular_first, tiny_catalog, tiny_logs

from ragrec.generation import GeneratorConfig
from ragrec.generation._transformers import TransformersGenerator
from ragrec.prompting import PromptBuilder
from ragrec.tuning import TUNE_PROMPT, TuneConfig, Tuner, build_examples

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 6-example LoRA run on the top 4 layers (peft's layers_to_transform), with a step
    size large enough that the adapter visibly moves the scores."""
    catalog, logs = tiny_catalog(), tiny_logs()
    cfg = TuneConfig(
        max_examples=6,
        n_candidates=8,
        grad_accum=1,
        learning_rate=1e-2,
        warmup_steps=0,
        train_layers=4,
        device="cpu",
        threads=2,
    )
    examples = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)
    result = Tuner(cfg).fit(examples, catalog, tmp_path_factory.mktemp("tune") / "run")
    return {"catalog": catalog, "examples": examples, "adapter": result.model_path}


def test_vllm_scores_with_the_tuned_adapter(tuned: dict[str, Any], model_folder: Path) -> None:
    from ragrec.generation._vllm import VLLMGenerator

    adapter = tuned["adapter"]
    base = TransformersGenerator(GeneratorConfig(device="cpu"))
    builder = PromptBuilder(base.tokenizer, TUNE_PROMPT)
    ids, titles = tuned["catalog"].item_ids, tuned["catalog"].titles
    prompts = [
        builder.render(
            history=[(ids[p], str(titles[p])) for p in ex.history],
            candidates=[(ids[p], str(titles[p])) for p in ex.candidates],
        )
        for ex in tuned["examples"][:4]
    ]
    before = base.label_logprobs(prompts)
    reference = TransformersGenerator(GeneratorConfig(device="cpu", adapter=adapter))
    expected = reference.label_logprobs(prompts)
    gen = VLLMGenerator(GeneratorConfig(backend="vllm", device="cpu", adapter=adapter))
    try:
        got = gen.label_logprobs(prompts)
        assert gen.info.model.endswith(f"+{adapter}")
    finally:
        gen.close()
    # the adapter matters: far more than the kernels' differences
    assert np.abs(expected - before).max() > 0.3
    # vLLM applies it: the transformers backend's tuned numbers, up to kernels
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
