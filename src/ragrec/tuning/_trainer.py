"""The tuning loop: verbalizer cross-entropy, LoRA or full, resumable, time-boxed."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragrec.data import Catalog
from ragrec.errors import ConfigError
from ragrec.generation import BUNDLED_MODEL, GeneratorConfig, resolve_device
from ragrec.prompting import LABELS, PromptBuilder, PromptTooLongError
from ragrec.tuning._config import TuneConfig
from ragrec.tuning._examples import TuneExample

logger = logging.getLogger(__name__)

__all__ = ["TuneProgress", "TuneResult", "Tuner", "latest_run"]

RUN_FILE = "tune.json"
LOSS_FILE = "loss.json"
EXAMPLES_FILE = "examples.json"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TuneProgress:
    """One log point: optimizer step, examples seen, mean loss since the last point."""

    step: int
    examples: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class TuneResult:
    """What a run wrote.

    Attributes:
        path: The run folder.
        method: ``lora`` or ``full``.
        model_path: What to load: the adapter folder (lora, as ``generator.adapter``) or
            the model folder (full, as ``generator.model``).
        base_model: The model trained from (with ``base_gguf_file`` for a GGUF).
        examples: Examples trained on (counting epochs), of ``total_examples`` built.
        steps: Optimizer steps.
        seconds: Training time (across resumes).
        loss_start: Mean loss of the first log interval.
        loss_end: Mean loss of the last log interval.
        finished: True when every example was used; False when a budget stopped it.
        curve: The loss curve.
    """

    path: str
    method: str
    model_path: str
    base_model: str
    base_gguf_file: str | None
    examples: int
    total_examples: int
    steps: int
    seconds: float
    loss_start: float
    loss_end: float
    finished: bool
    curve: tuple[TuneProgress, ...] = field(default=())

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    def generator_config(self, base: GeneratorConfig | None = None) -> GeneratorConfig:
        """``base`` (default: the run's base model) pointed at the tuned weights."""
        cfg = base or GeneratorConfig(model=self.base_model, gguf_file=self.base_gguf_file)
        if cfg.backend == "llamacpp":  # runs GGUF files only: tuned weights need transformers
            cfg = cfg.model_copy(update={"backend": "transformers"})
        if self.method == "lora":
            return cfg.model_copy(update={"adapter": self.model_path})
        return cfg.model_copy(update={"model": self.model_path, "gguf_file": None, "adapter": None})


def latest_run(folder: str | Path) -> Path | None:
    """The most recent finished or stopped run under ``folder`` (by its saved time)."""
    root = Path(folder)
    runs = []
    for run in root.glob(f"*/{RUN_FILE}") if root.is_dir() else []:
        try:
            info = json.loads(run.read_text())
        except ValueError:
            continue
        if info.get("model_path"):
            runs.append((float(info.get("saved_at", 0.0)), run.parent))
    return max(runs)[1] if runs else None


class Tuner:
    """Fine-tunes a causal LM to put the most probability on the right candidate's label.

    Args:
        config: Method, optimizer, budgets.
        base: The model to start from (``model``/``gguf_file``; an ``adapter`` continues
            training that LoRA adapter).
    """

    def __init__(self, config: TuneConfig | None = None, *, base: GeneratorConfig | None = None):
        self.config = config or TuneConfig()
        self.base = base or GeneratorConfig()
        if self.base.adapter is not None and self.config.method == "full":
            raise ConfigError(
                f"method='full' cannot continue adapter={self.base.adapter!r}; merge it first "
                "(ragrec.generation.merge_adapter) and pass the merged folder as the model"
            )

    def _source(self) -> tuple[str, str | None]:
        if self.base.model == BUNDLED_MODEL:
            from ragrec.generation import bundled_model_path

            return bundled_model_path()
        return self.base.model, self.base.gguf_file

    def _load(self, device: str, checkpoint: Path | None) -> tuple[Any, Any]:
        """The trainable model (peft-wrapped for lora) and the tokenizer."""
        from ragrec.generation import load_trainable, resolve_adapter

        cfg = self.config
        folder, gguf = self._source()
        model, tokenizer = load_trainable(folder, gguf)
        layers = self._trained_layers(model)
        if cfg.method == "full":
            if checkpoint is not None:
                import torch

                state = torch.load(checkpoint / "model.pt", map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            if layers is not None:
                # frozen weights below the top layers: autograd records nothing there
                trained = {f".layers.{i}." for i in layers}
                for name, param in model.named_parameters():
                    param.requires_grad_(any(t in name for t in trained))
            return model.to(device), tokenizer
        from peft import LoraConfig, PeftModel, get_peft_model

        start = checkpoint / "adapter" if checkpoint is not None else None
        if start is None and self.base.adapter is not None:
            start = Path(resolve_adapter(self.base.adapter))
        if start is not None:
            model = PeftModel.from_pretrained(model, str(start), is_trainable=True)
        else:
            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.target_modules),
                layers_to_transform=layers,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
        return model.to(device), tokenizer

    def _trained_layers(self, model: Any) -> list[int] | None:
        """The decoder layers ``train_layers`` selects (the top ones), None for all."""
        n = self.config.train_layers
        if n is None:
            return None
        total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if n > total:
            raise ConfigError(
                f"train_layers={n} but the model has {total} decoder layers "
                f"(num_hidden_layers); use at most {total}, or leave it unset to train all"
            )
        return list(range(total - n, total))

    def fit(
        self,
        examples: Sequence[TuneExample],
        catalog: Catalog,
        out: str | Path,
        *,
        resume: bool = False,
        progress: Callable[[TuneProgress], None] | None = None,
    ) -> TuneResult:
        """Train on ``examples`` and save the run into ``out``.

        ``out`` gets ``examples.json`` (what is trained on, by item id), ``checkpoint/``
        (weights, optimizer state and example cursor every ``checkpoint_every`` steps),
        ``loss.json`` (the curve), ``tune.json`` (config and metadata), and ``adapter/``
        (lora, peft format) or ``model/`` (full, a Hugging Face folder) at the end.

        Args:
            examples: Training examples (ignored on resume: the saved ones are used).
            catalog: The catalog the examples' positions refer to.
            out: The run folder.
            resume: Continue the run saved in ``out`` from its last checkpoint.
            progress: Called at every log point.

        Raises:
            ConfigError: No examples; ``out`` holds a run and ``resume`` is off; or
                ``resume`` is on and there is no checkpoint.
        """
        import torch

        cfg = self.config
        run = Path(out)
        ckpt_dir = run / CHECKPOINT
        checkpoint: Path | None = None
        if resume:
            if not (ckpt_dir / "state.pt").is_file():
                raise ConfigError(
                    f"resume=True but {ckpt_dir} holds no checkpoint; start the run without "
                    "--resume"
                )
            checkpoint = ckpt_dir
            saved = json.loads((run / EXAMPLES_FILE).read_text())
            examples = [TuneExample.from_json(e, catalog) for e in saved]
        else:
            if not examples:
                raise ConfigError("no training examples; check the store's interactions")
            if run.exists() and any(run.iterdir()):
                raise ConfigError(
                    f"out={str(run)!r} already holds a run; pass resume=True (--resume) to "
                    "continue it, or choose a new folder"
                )
            run.mkdir(parents=True, exist_ok=True)
            _atomic_json(run / EXAMPLES_FILE, [e.to_json(catalog) for e in examples])
        device, _ = resolve_device(
            GeneratorConfig(device=cfg.device, dtype="float32", threads=cfg.threads)
        )
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        model, hf_tok = self._load(device, checkpoint)
        model.train()
        from ragrec.generation import HFTokenizer

        tok = HFTokenizer(hf_tok)
        builder = PromptBuilder(tok, cfg.prompt)
        label_ids = torch.tensor(tok.label_ids(LABELS[: cfg.n_candidates]), device=device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        step = cursor = 0
        elapsed = 0.0
        curve: list[TuneProgress] = []
        if checkpoint is not None:
            state = torch.load(checkpoint / "state.pt", map_location=device, weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            step, cursor, elapsed = state["step"], state["cursor"], state["seconds"]
            curve = [TuneProgress(**p) for p in state["curve"]]
            torch.set_rng_state(state["rng"])
            logger.info("resumed %s at step %d, example %d", run, step, cursor)
        titles = catalog.titles
        ids = catalog.item_ids
        total = len(examples) * cfg.epochs
        budget = cfg.max_minutes * 60 if cfg.max_minutes is not None else math.inf
        window: list[float] = []
        pending = 0
        started = time.perf_counter() - elapsed
        logger.info(
            "tuning %s (%s) on %s: %d examples, lr %g, %d per step",
            self.base.model,
            cfg.method,
            device,
            total,
            cfg.lr,
            cfg.grad_accum,
        )

        def save_checkpoint() -> None:
            tmp = run / f".{CHECKPOINT}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            if cfg.method == "lora":
                model.save_pretrained(tmp / "adapter")
            else:
                torch.save(model.state_dict(), tmp / "model.pt")
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "cursor": cursor,
                    "seconds": time.perf_counter() - started,
                    "curve": [asdict(p) for p in curve],
                    "rng": torch.get_rng_state(),
                },
                tmp / "state.pt",
            )
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            os.replace(tmp, ckpt_dir)

        def optimizer_step() -> None:
            nonlocal step, pending, window
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * scale
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            pending = 0
            if step % cfg.log_every == 0 and window:
                point = TuneProgress(
                    step, cursor, float(sum(window) / len(window)), time.perf_counter() - started
                )
                curve.append(point)
                window = []
                logger.info(
                    "step %d, %d/%d examples, loss %.4f, %.0f s",
                    step,
                    cursor,
                    total,
                    point.loss,
                    point.seconds,
                )
                _atomic_json(run / LOSS_FILE, [asdict(p) for p in curve])
                if progress is not None:
                    progress(point)
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()

        while cursor < total and time.perf_counter() - started < budget:
            ex = examples[cursor % len(examples)]
            try:
                prompt = builder.render(
                    history=[(ids[p], str(titles[p])) for p in ex.history],
                    candidates=[(ids[p], str(titles[p])) for p in ex.candidates],
                    ranks=ex.ranks,
                )
            except PromptTooLongError as exc:
                logger.warning("tuning example %d skipped: %s", cursor, exc)
                cursor += 1
                continue
            input_ids = torch.tensor([tok.encode(prompt.text)], device=device)
            logits = model(input_ids=input_ids, logits_to_keep=1).logits[0, -1]
            logp = torch.log_softmax(logits[label_ids[: len(ex.candidates)]].float(), dim=-1)
            if ex.kind == "positive":
                loss = -logp[ex.target]
            else:
                p = logp[ex.target].exp().clamp(max=1 - 1e-6)
                loss = -torch.log1p(-p) * cfg.unlikelihood_weight
            (loss / cfg.grad_accum).backward()
            window.append(float(loss.detach()))
            cursor += 1
            pending += 1
            if pending == cfg.grad_accum:
                optimizer_step()
        if pending:
            optimizer_step()
        if window:
            curve.append(
                TuneProgress(
                    step, cursor, float(sum(window) / len(window)), time.perf_counter() - started
                )
            )
        seconds = time.perf_counter() - started
        save_checkpoint()
        model.eval()
        if cfg.method == "lora":
            target = run / "adapter"
            shutil.rmtree(target, ignore_errors=True)
            model.save_pretrained(target)
        else:
            target = run / "model"
            shutil.rmtree(target, ignore_errors=True)
            model.save_pretrained(target)
            hf_tok.save_pretrained(target)
        result = TuneResult(
            path=str(run),
            method=cfg.method,
            model_path=str(target),
            base_model=self.base.model,
            base_gguf_file=self.base.gguf_file,
            examples=cursor,
            total_examples=total,
            steps=step,
            seconds=round(seconds, 2),
            loss_start=curve[0].loss if curve else float("nan"),
            loss_end=curve[-1].loss if curve else float("nan"),
            finished=cursor >= total,
            curve=tuple(curve),
        )
        _atomic_json(run / LOSS_FILE, [asdict(p) for p in curve])
        info = {k: v for k, v in asdict(result).items() if k != "curve"}
        info.update(
            config=cfg.model_dump(mode="json"),
            base_adapter=self.base.adapter,
            device=device,
            examples_per_second=round(result.examples_per_second, 3),
            saved_at=time.time(),
        )
        _atomic_json(run / RUN_FILE, info)
        logger.info(
            "tuned %d examples in %.1f min (%.2f/s), loss %.3f -> %.3f; saved %s",
            cursor,
            seconds / 60,
            result.examples_per_second,
            result.loss_start,
            result.loss_end,
            target,
        )
        return result


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
