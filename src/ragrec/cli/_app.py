"""The ``ragrec`` command."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragrec._version import __version__
from ragrec.errors import RagrecError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="ragrec",
    help="Retrieval-augmented, prompt-based recommendation with a generative LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare LLMs for the backends.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)


def _friendly(func: F) -> F:
    """Turn ragrec errors into one line on stderr and exit code 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagrecError as exc:
            # escape: messages hold TOML table names like [eval] that rich would eat as markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"ragrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _cache_root() -> Path:
    """Where the CLI caches datasets and embeddings: $RAGREC_CACHE_DIR or ~/.cache/ragrec."""
    value = os.environ.get("RAGREC_CACHE_DIR")
    return Path(value) if value else Path.home() / ".cache" / "ragrec"


def _dataset_dir(explicit: str | None) -> Path:
    return Path(explicit) if explicit else _cache_root() / "datasets"


@data_app.command("download")
@_friendly
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name: movielens-small.")] = "movielens-small",
    dest: Annotated[
        str | None,
        typer.Option("--dest", help="Folder to cache it in (default $RAGREC_CACHE_DIR/datasets)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--from", help="A local copy (folder or .zip) to verify and cache."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even if cached.")] = False,
) -> None:
    """Download a dataset (or take a local copy), check its sha256, and cache it."""
    from ragrec.data import download_dataset

    path = download_dataset(
        name,
        dest=_dataset_dir(dest),
        source=Path(source) if source else None,
        force=force,
    )
    out.print(str(path))


def _resolve_data(path: str, cache_dir: str | None) -> Path:
    from ragrec.data import DATASETS, download_dataset

    if path in DATASETS and not Path(path).exists():
        return download_dataset(path, dest=_dataset_dir(cache_dir))
    return Path(path)


@data_app.command("stats")
@_friendly
def data_stats(
    path: Annotated[str, typer.Argument(help="MovieLens folder or dataset name.")],
    protocol: Annotated[str, typer.Option(help="Protocol whose steps to show.")] = "llamarec",
    on_invalid: Annotated[str, typer.Option(help="error | drop")] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print users / items / interactions after each step of a protocol."""
    from ragrec.data import load_movielens
    from ragrec.eval import prepare_protocol

    ml = load_movielens(_resolve_data(path, None), on_invalid=on_invalid)  # type: ignore[arg-type]
    data = prepare_protocol(protocol, ml.catalog, ml.interactions)
    if as_json:
        rows = [s.__dict__ for s in data.steps]
        out.print_json(json.dumps({"protocol": protocol, "layout": ml.layout, "steps": rows}))
        return
    table = Table(title=f"{ml.path} ({ml.layout} layout), protocol {protocol}")
    for col in ("step", "users", "items", "interactions"):
        table.add_column(col, justify="left" if col == "step" else "right")
    table.add_row("catalog", "", f"{len(ml.catalog):,}", "")
    for step in data.steps:
        table.add_row(step.name, f"{step.users:,}", f"{step.items:,}", f"{step.interactions:,}")
    out.print(table)


@app.command("eval")
@_friendly
def eval_cmd(
    data: Annotated[
        str | None, typer.Option(help="MovieLens folder or dataset name (movielens-small).")
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="Evaluation protocol: llamarec.")] = None,
    ranker: Annotated[
        str | None,
        typer.Option(
            help="Ranker: popularity, random, retrieval, transition, ease, semantic, llm."
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="validation | test")] = None,
    out_dir: Annotated[
        str, typer.Option("--out", help="Report folder (summary.json, users.jsonl).")
    ] = "runs/eval",
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics, e.g. ndcg@10,recall@20.")
    ] = None,
    limit_users: Annotated[int | None, typer.Option(help="Only the first N users.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    config: Annotated[str | None, typer.Option(help="TOML configuration file.")] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Embedding cache (default $RAGREC_CACHE_DIR or ~/.cache/ragrec)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Evaluate a ranker offline and write a report folder."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ragrec.config import load_config
    from ragrec.data import load_movielens
    from ragrec.eval import evaluate, make_ranker, prepare_protocol, write_report

    cfg = load_config(
        config,
        data={"path": data},
        eval={
            "protocol": protocol,
            "ranker": ranker,
            "split": split,
            "metrics": metrics.split(",") if metrics else None,
            "limit_users": limit_users,
            "seed": seed,
        },
    )
    ec = cfg.eval
    rk_config = dict(ec.ranker_config)
    if ec.ranker == "random" and seed is not None:
        rk_config["seed"] = seed
    elif ec.ranker == "random":
        rk_config.setdefault("seed", ec.seed)
    cache = cache_dir or str(_cache_root())
    if ec.ranker in ("retrieval", "llm"):
        retriever = dict(rk_config.get("retriever", {}))
        retriever.setdefault("cache_dir", cache)
        rk_config["retriever"] = retriever
    elif ec.ranker in ("transition", "ease", "semantic"):
        rk_config.setdefault("cache_dir", cache)
    model = make_ranker(ec.ranker, rk_config)
    ml = load_movielens(
        _resolve_data(cfg.data.path, cfg.data.cache_dir), on_invalid=cfg.data.on_invalid
    )
    prepared = prepare_protocol(ec.protocol, ml.catalog, ml.interactions)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} users"),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{ec.ranker} on {ec.split}", total=None)
        result = evaluate(
            prepared,
            model,
            split=ec.split,
            metrics=ec.metrics,
            dataset=ml.path.name,
            batch_size=ec.batch_size,
            limit_users=ec.limit_users,
            seed=ec.seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    folder = write_report(result, out_dir)
    table = Table(
        title=f"{result.ranker} | {result.protocol} | {result.split} | {len(result.ranks)} users"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    out.print(f"report: {folder / 'summary.json'} ({result.seconds['total']:.2f} s)")


@config_app.command("show")
@_friendly
def config_show(
    config: Annotated[str | None, typer.Option(help="TOML configuration file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the resolved configuration (defaults merged with the file)."""
    from ragrec.config import load_config, to_toml

    cfg = load_config(config)
    if as_json:
        out.print_json(cfg.model_dump_json())
    else:
        sys.stdout.write(to_toml(cfg))


@models_app.command("export")
@_friendly
def models_export(
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Target folder (default $RAGREC_CACHE_DIR/models/<model>-hf)."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="smollm2-135m-instruct (bundled) or a folder with a GGUF.")
    ] = "smollm2-135m-instruct",
    gguf_file: Annotated[
        str | None, typer.Option("--gguf-file", help="GGUF file inside --model.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing export.")] = False,
) -> None:
    """Write a GGUF model (default: the bundled SmolLM2) as the plain Hugging Face folder
    that vLLM and OpenAI-compatible servers load."""
    from ragrec.generation import default_export_dir, export_model

    target = Path(out_dir) if out_dir else default_export_dir(model, _cache_root())
    result = export_model(target, model=model, gguf_file=gguf_file, dtype=dtype, force=force)
    note = "already exported" if result["reused"] else f"{result['seconds']:.1f} s"
    out.print(f"{result['path']} ({result['bytes'] / 1e6:.0f} MB, {note})")


def main() -> None:
    """Entry point of the ``ragrec`` script."""
    app()
