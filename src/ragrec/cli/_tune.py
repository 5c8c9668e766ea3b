"""``ragrec tune``: fine-tune the ranking model on a store's own logs and feedback."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from ragrec.errors import RagrecError

__all__ = ["tune_cmd"]

out = Console()
err = Console(stderr=True)


def tune_cmd(
    store: Annotated[str, typer.Argument(help="Store folder (from `ragrec index`).")],
    method: Annotated[
        str, typer.Option(help="lora (a peft adapter) or full (every weight).")
    ] = "lora",
    max_minutes: Annotated[
        float, typer.Option(help="Stop and save after this much training time.")
    ] = 25.0,
    max_examples: Annotated[
        int, typer.Option(help="Training examples built (sliding targets + feedback).")
    ] = 2000,
    examples_per_user: Annotated[
        int, typer.Option(help="Sliding targets sampled per training user.")
    ] = 4,
    random_negatives: Annotated[
        int,
        typer.Option(help="Of the 19 wrong candidates, how many are random unseen items."),
    ] = 0,
    candidate_order: Annotated[
        str,
        typer.Option(
            help="shuffled (the model learns from titles; rank with prompt.shuffle on) or "
            "retrieval (label A is the retriever's best; rank with prompt.shuffle off)."
        ),
    ] = "shuffled",
    holdout_last: Annotated[
        int,
        typer.Option(
            help="Targets from each user's last N items, ranked by a retriever refit "
            "without them (use with --candidate-order retrieval). 0: anywhere."
        ),
    ] = 0,
    show_rank: Annotated[
        str,
        typer.Option(
            help="Show the retriever's ranks in the prompt while labels stay shuffled: "
            "none, inline (after each title) or order (a line of labels, best first). "
            "Rank with the same [prompt] show_rank."
        ),
    ] = "none",
    item_text: Annotated[
        str,
        typer.Option(help="Name items by title, id or id_title (rank with the same prompt)."),
    ] = "title",
    train_layers: Annotated[
        int | None,
        typer.Option(help="Train only the top N decoder layers (about 2x faster on CPU)."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default 3e-4 lora, 2e-5 full).")
    ] = None,
    grad_accum: Annotated[int, typer.Option(help="Examples per optimizer step.")] = 8,
    epochs: Annotated[int, typer.Option(help="Passes over the examples.")] = 1,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    feedback: Annotated[
        bool, typer.Option(help="Learn from stored feedback (likes as answers, dislikes not).")
    ] = True,
    run_id: Annotated[
        str | None, typer.Option(help="Run folder name under STORE/tuned/ (default: time).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the interrupted run --run-id from its checkpoint.")
    ] = False,
    from_latest: Annotated[
        bool, typer.Option(help="Start from the latest tuned run (incremental tuning).")
    ] = False,
    checkpoint_every: Annotated[
        int, typer.Option(help="Optimizer steps between resumable checkpoints.")
    ] = 25,
    log_every: Annotated[int, typer.Option(help="Optimizer steps between loss lines.")] = 5,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of example sampling and shuffles.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fine-tune the ranking LLM on the store's interactions and feedback.

    Each example is a ranking prompt: a user's history, the true next item among the
    retriever's candidates (shuffled under labels A..T, or in retrieval order with
    --candidate-order retrieval), and the loss is cross-entropy
    over the label tokens at the answer position. Writes STORE/tuned/<run>/ (adapter/
    or model/, tune.json, loss.json, checkpoint/). Rank with it by setting
    generator.adapter = "STORE/tuned/<run>/adapter" (lora) or generator.model =
    "STORE/tuned/<run>/model" (full) in the store's config.
    """
    try:
        _tune(locals())
    except RagrecError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _tune(opts: dict[str, Any]) -> None:
    from ragrec import Recommender
    from ragrec.tuning import TUNE_PROMPT, TuneProgress, parse_tune_config

    cfg = parse_tune_config(
        {
            k: opts[k]
            for k in (
                "method",
                "max_minutes",
                "max_examples",
                "examples_per_user",
                "random_negatives",
                "candidate_order",
                "holdout_last",
                "train_layers",
                "grad_accum",
                "epochs",
                "lora_r",
                "lora_alpha",
                "lora_dropout",
                "feedback",
                "checkpoint_every",
                "log_every",
                "device",
                "threads",
                "seed",
            )
        }
        | {
            "learning_rate": opts["lr"],
            "prompt": {
                **TUNE_PROMPT.model_dump(),
                "show_rank": opts["show_rank"],
                "item_text": opts["item_text"],
            },
        }
    )
    show: Literal[True, False] = not opts["as_json"]

    def progress(p: TuneProgress) -> None:
        if show:
            rate = p.examples / p.seconds if p.seconds else 0.0
            err.print(
                f"step {p.step:5d}  examples {p.examples:6d}  loss {p.loss:.4f}  "
                f"{p.seconds / 60:6.1f} min  {rate:.2f} ex/s",
                highlight=False,
            )

    logging.getLogger("transformers").setLevel(logging.ERROR)
    rec = Recommender.load(opts["store"])
    try:
        result = rec.tune(
            cfg,
            run_id=opts["run_id"],
            from_latest=opts["from_latest"],
            resume=opts["resume"],
            progress=progress,
        )
    finally:
        rec.close()
    summary = {
        "path": result.path,
        "method": result.method,
        "model_path": result.model_path,
        "examples": result.examples,
        "total_examples": result.total_examples,
        "steps": result.steps,
        "minutes": round(result.seconds / 60, 2),
        "examples_per_second": round(result.examples_per_second, 3),
        "loss_start": result.loss_start,
        "loss_end": result.loss_end,
        "finished": result.finished,
    }
    if opts["as_json"]:
        out.print_json(json.dumps(summary))
        return
    key = "adapter" if result.method == "lora" else "model"
    out.print(
        f"tuned {result.examples}/{result.total_examples} examples in "
        f"{summary['minutes']} min ({summary['examples_per_second']} ex/s), loss "
        f"{result.loss_start:.3f} -> {result.loss_end:.3f}\n"
        f"saved {result.model_path}\n"
        f'rank with it: [generator] {key} = "{result.model_path}"',
        highlight=False,
    )
