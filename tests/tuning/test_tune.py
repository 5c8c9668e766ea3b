"""A tiny real tune (SmolLM2-135M, a few steps): checkpoints, resume, and the saved
adapter changing the scores once the transformers backend reloads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.generation.conftest import TEST_CONFIG, real_generator
from tests.tuning.conftest import popular_first

from ragrec.data import Catalog
from ragrec.errors import ConfigError
from ragrec.generation import GeneratorConfig
from ragrec.generation._transformers import TransformersGenerator, resolve_adapter
from ragrec.prompting import PromptBuilder, RenderedPrompt
from ragrec.tuning import TUNE_PROMPT, TuneConfig, TuneProgress, Tuner, build_examples, latest_run


class _StopError(Exception):
    """Raised from the progress callback: a run killed after a checkpoint."""


def _prompts(catalog: Catalog, examples: list) -> list[RenderedPrompt]:  # type: ignore[type-arg]
    builder = PromptBuilder(real_generator().tokenizer, TUNE_PROMPT)
    ids, titles = catalog.item_ids, catalog.titles
    return [
        builder.render(
            history=[(ids[p], str(titles[p])) for p in ex.history],
            candidates=[(ids[p], str(titles[p])) for p in ex.candidates],
        )
        for ex in examples
    ]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 6-example LoRA run killed after its checkpoint at step 2, then resumed."""
    from tests.tuning.conftest import tiny_catalog, tiny_logs

    catalog, logs = tiny_catalog(), tiny_logs()
    cfg = TuneConfig(
        max_examples=6,
        n_candidates=8,
        grad_accum=1,
        learning_rate=5e-3,
        warmup_steps=0,
        checkpoint_every=2,
        log_every=1,
        device="cpu",
        threads=1,
    )
    examples = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)
    run = tmp_path_factory.mktemp("tune") / "run"
    seen: list[TuneProgress] = []

    def stop_at_3(p: TuneProgress) -> None:
        seen.append(p)
        if p.step == 3:
            raise _StopError

    with pytest.raises(_StopError):
        Tuner(cfg).fit(examples, catalog, run, progress=stop_at_3)
    first = list(seen)
    seen.clear()
    result = Tuner(cfg).fit([], catalog, run, resume=True, progress=seen.append)
    return {
        "catalog": catalog,
        "logs": logs,
        "examples": examples,
        "run": run,
        "first": first,
        "resumed": list(seen),
        "result": result,
    }


def test_resume_continues_from_checkpoint(tuned: dict) -> None:  # type: ignore[type-arg]
    first, resumed, result = tuned["first"], tuned["resumed"], tuned["result"]
    assert [p.step for p in first] == [1, 2, 3]
    # the checkpoint was at step 2: step 3 is redone, then the run goes on to the end
    assert [p.step for p in resumed] == [3, 4, 5, 6]
    assert result.steps == 6
    assert result.examples == 6
    assert result.finished
    assert [p.step for p in result.curve] == [1, 2, 3, 4, 5, 6]


def test_run_folder(tuned: dict) -> None:  # type: ignore[type-arg]
    run: Path = tuned["run"]
    info = json.loads((run / "tune.json").read_text())
    assert info["method"] == "lora"
    assert info["base_model"] == "smollm2-135m-instruct"
    assert info["examples"] == 6
    assert info["seconds"] > 0
    assert info["config"]["learning_rate"] == 5e-3
    curve = json.loads((run / "loss.json").read_text())
    assert len(curve) == 6
    assert all(np.isfinite(p["loss"]) for p in curve)
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "checkpoint" / "state.pt").is_file()
    assert resolve_adapter(str(run)) == str(run / "adapter")
    assert latest_run(run.parent) == run


def test_adapter_reloads_and_changes_scores(tuned: dict) -> None:  # type: ignore[type-arg]
    result = tuned["result"]
    prompts = _prompts(tuned["catalog"], tuned["examples"][:3])
    base = real_generator().label_logprobs(prompts)
    cfg = result.generator_config(TEST_CONFIG)
    assert cfg.adapter == result.model_path
    again = TransformersGenerator(cfg)
    after = again.label_logprobs(prompts)
    assert np.isfinite(after[:, :8]).all()
    assert np.abs(after - base)[:, :8].max() > 0.05
    assert "+" in again.info.model  # the adapter is recorded with the model
    # trained toward the answers: their mean log-probability went up
    targets = [ex.target for ex in tuned["examples"][:3]]
    rows = np.arange(3)
    assert after[rows, targets].mean() > base[rows, targets].mean()


def test_existing_run_needs_resume(tuned: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match="already holds a run; pass resume=True"):
        Tuner(TuneConfig()).fit(tuned["examples"], tuned["catalog"], tuned["run"])


def test_resume_without_checkpoint(tmp_path: Path, catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        Tuner(TuneConfig()).fit([], catalog, tmp_path / "none", resume=True)


def test_no_examples(tmp_path: Path, catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match="no training examples"):
        Tuner(TuneConfig()).fit([], catalog, tmp_path / "run")


def test_adapter_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no adapter_config\.json"):
        resolve_adapter(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="full fine-tuning run"):
        resolve_adapter(str(tmp_path))


def test_full_cannot_continue_an_adapter() -> None:
    with pytest.raises(ConfigError, match="method='full' cannot continue"):
        Tuner(TuneConfig(method="full"), base=GeneratorConfig(adapter="/x"))


@pytest.mark.slow
def test_merged_export_scores_like_the_adapter(
    tuned: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    """The merged folder (for vLLM without LoRA, or an OpenAI-compatible server) gives
    the adapter's scores."""
    from ragrec.generation import merge_adapter

    result = tuned["result"]
    merged = merge_adapter(result.path, tmp_path / "merged")
    assert merged["source"]["adapter"] == result.model_path
    prompts = _prompts(tuned["catalog"], tuned["examples"][:2])
    with_adapter = TransformersGenerator(result.generator_config(TEST_CONFIG))
    plain = TransformersGenerator(
        TEST_CONFIG.model_copy(update={"model": merged["path"], "gguf_file": None})
    )
    np.testing.assert_allclose(
        plain.label_logprobs(prompts), with_adapter.label_logprobs(prompts), atol=1e-3
    )


def _layer_of(name: str) -> int:
    return int(name.split(".layers.")[1].split(".")[0])


def test_train_layers_limits_what_trains() -> None:
    lora, _ = Tuner(TuneConfig(train_layers=2))._load("cpu", None)
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained
    assert all("lora_" in n for n in trained)
    assert {_layer_of(n) for n in trained} == {28, 29}  # SmolLM2-135M has 30 layers
    full, _ = Tuner(TuneConfig(method="full", train_layers=1))._load("cpu", None)
    trained = [n for n, p in full.named_parameters() if p.requires_grad]
    assert trained
    assert {_layer_of(n) for n in trained} == {29}
    assert not any("embed" in n or "lm_head" in n for n in trained)


def test_train_layers_beyond_the_model() -> None:
    with pytest.raises(ConfigError, match="train_layers=31 but the model has 30"):
        Tuner(TuneConfig(train_layers=31))._load("cpu", None)
