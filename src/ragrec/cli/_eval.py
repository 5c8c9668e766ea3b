"""``ragrec eval``: offline evaluation runs, grids of systems, reports and comparisons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.table import Table

from ragrec.cli._app import _cache_root, _friendly, err, out
from ragrec.cli._data import (
    InteractionColumnsOption,
    InteractionsOption,
    ItemColumnsOption,
    ItemsOption,
    _read_data,
    _read_items,
)
from ragrec.errors import ConfigError

if TYPE_CHECKING:
    from ragrec.config import DataConfig, EvalConfig, RagrecConfig
    from ragrec.data import Catalog, Interactions
    from ragrec.eval import EvalResult, ProtocolData

eval_app = typer.Typer(
    help="Evaluate rankers offline; compare runs; build reports.",
    invoke_without_command=True,
)

_RANKER_HELP = (
    "Ranker: popularity, random, itemknn, als, bpr, transition, ease, semantic, retrieval, llm."
)


def _pairs(values: list[str] | None, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict (values parsed as JSON when they are JSON)."""
    parsed: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r} is not KEY=VALUE; e.g. {option} workers=2")
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
    return parsed


def ranker_config(name: str, config: dict[str, Any], *, seed: int, cache: str) -> dict[str, Any]:
    """A ranker's config with the run's seed and the embedding cache filled in where the
    ranker takes them (an explicit value in ``config`` wins)."""
    from ragrec.eval import RANKERS

    result = dict(config)
    fields = RANKERS[name][1].model_fields
    if "seed" in fields:
        result.setdefault("seed", seed)
    if "retriever" in fields:
        retriever = dict(result.get("retriever", {}))
        retriever.setdefault("cache_dir", cache)
        result["retriever"] = retriever
    elif "cache_dir" in fields:
        result.setdefault("cache_dir", cache)
    return result


def _run_one(
    prepared: ProtocolData,
    ec: EvalConfig,
    *,
    name: str,
    ranker: str,
    config: dict[str, Any],
    dataset: str,
    out_dir: Path,
    cache: str,
    engine: str,
    engine_options: dict[str, Any],
    resume: bool,
    progress: bool,
) -> EvalResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ragrec.eval import evaluate, make_ranker

    model = make_ranker(ranker, ranker_config(ranker, config, seed=ec.seed, cache=cache))
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} users"),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{name} on {ec.split}", total=None)
        return evaluate(
            prepared,
            model,
            split=ec.split,
            metrics=ec.metrics,
            dataset=dataset,
            batch_size=ec.batch_size,
            limit_users=ec.limit_users,
            seed=ec.seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            out=out_dir,
            resume=resume,
            engine=engine,  # type: ignore[arg-type]
            engine_options=engine_options,
            system=name,
        )


def _print_result(result: EvalResult) -> None:
    table = Table(
        title=f"{result.summary()['system']} | {result.protocol} | {result.split} | "
        f"{len(result.ranks)} users"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in {**result.metrics, **result.beyond}.items():
        table.add_row(name, f"{value:.4f}")
    for name, value in result.candidate_recall.items():
        table.add_row(f"candidate {name}", f"{value:.4f}")
    if result.latency:
        table.add_row("latency p50 (s/user)", f"{result.latency['p50']:.4f}")
    out.print(table)


def _write_config(cfg: RagrecConfig, folder: Path) -> None:
    from ragrec.config import to_toml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(to_toml(cfg), encoding="utf-8")


def _eval_data(
    settings: DataConfig,
    protocol: str,
    *,
    data: str | None,
    items: str | None,
    interactions: str | None,
    item_columns: str | None,
    interaction_columns: str | None,
) -> tuple[Catalog, Interactions, str]:
    """The catalog, the interactions and the dataset's name: from MovieLens, or from the
    user's files (``--items`` alone is the catalog of the ``custom`` protocol's files)."""
    from ragrec.data import Interactions

    files = items is not None or interactions is not None
    if files and data is not None:
        raise ConfigError("pass either --data or --items/--interactions, not both")
    if not files and (item_columns is not None or interaction_columns is not None):
        raise ConfigError(
            "--item-columns and --interaction-columns describe --items and --interactions; "
            "pass those files too"
        )
    if interactions is not None and items is None:
        raise ConfigError("--interactions needs --items (the catalog its item ids refer to)")
    if items is not None and protocol == "custom":
        if interactions is not None:
            raise ConfigError(
                "protocol 'custom' reads its rows from the train, validation and test "
                "options (--protocol-option train=F ...); drop --interactions (--items "
                "gives the catalog)"
            )
        catalog = _read_items(items, item_columns=item_columns, on_invalid=settings.on_invalid)
        unused = Interactions(  # 'custom' reads its rows from its own files
            user_ids=np.empty(0, np.int64),
            item_ids=np.empty(0, catalog.item_ids.dtype),
            values=np.empty(0, np.float64),
            timestamps=np.empty(0, np.int64),
            kinds=np.empty(0, object),
        )
        return catalog, unused, Path(items).name
    if items is not None and interactions is None:
        raise ConfigError(
            f"--items needs --interactions for protocol {protocol!r} (only 'custom' "
            "takes its rows from split files)"
        )
    catalog, rows, _, name = _read_data(
        settings,
        items=items,
        interactions=interactions,
        item_columns=item_columns,
        interaction_columns=interaction_columns,
    )
    return catalog, rows, name


@eval_app.callback()
@_friendly
def eval_cmd(
    ctx: typer.Context,
    data: Annotated[
        str | None, typer.Option(help="MovieLens folder or dataset name (movielens-small).")
    ] = None,
    items: ItemsOption = None,
    interactions: InteractionsOption = None,
    item_columns: ItemColumnsOption = None,
    interaction_columns: InteractionColumnsOption = None,
    protocol: Annotated[
        str | None,
        typer.Option(help="Evaluation protocol: llamarec, llmrank-c20, temporal, custom."),
    ] = None,
    protocol_option: Annotated[
        list[str] | None,
        typer.Option(
            "--protocol-option", help="Protocol option KEY=VALUE (repeatable), e.g. seed=1."
        ),
    ] = None,
    ranker: Annotated[str | None, typer.Option(help=_RANKER_HELP)] = None,
    split: Annotated[str | None, typer.Option(help="validation | test")] = None,
    out_dir: Annotated[
        str,
        typer.Option("--out", help="Run folder (summary.json, users.jsonl, report.md, plots)."),
    ] = "runs/eval",
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics, e.g. ndcg@10,recall@20.")
    ] = None,
    limit_users: Annotated[int | None, typer.Option(help="Only the first N users.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Users scored per batch.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    config: Annotated[str | None, typer.Option(help="TOML configuration file.")] = None,
    systems: Annotated[
        str | None,
        typer.Option(
            help="TOML systems file: a grid of systems run side by side, one folder each "
            "under --out, with one report."
        ),
    ] = None,
    engine: Annotated[str, typer.Option(help="local | ray")] = "local",
    engine_option: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-option",
            help="Ray option KEY=VALUE (repeatable): address, workers, cpus_per_worker, "
            "gpus_per_worker.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue an interrupted run in --out from its per-user results."),
    ] = True,
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Embedding cache (default $RAGREC_CACHE_DIR or ~/.cache/ragrec)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Evaluate a ranker (or a grid of systems with --systems) offline and write a run
    folder with a report, on MovieLens (--data) or on your own item and interaction files
    (--items, --interactions, with the column options of `index`). Subcommands compare
    runs and rebuild reports."""
    if ctx.invoked_subcommand is not None:
        return
    from ragrec.config import load_config
    from ragrec.eval import (
        SystemRun,
        expand_systems,
        load_grid,
        load_run,
        prepare_protocol,
        write_run_report,
    )

    overrides = {
        "protocol": protocol,
        "ranker": ranker,
        "split": split,
        "metrics": metrics.split(",") if metrics else None,
        "limit_users": limit_users,
        "batch_size": batch_size,
        "seed": seed,
    }
    options = _pairs(protocol_option, "--protocol-option")
    published: list[dict[str, Any]] = []
    reference: str | None = None
    if systems is not None:
        if config is not None:
            raise ConfigError("give either --systems or --config: a systems file has its own")
        if ranker is not None:
            raise ConfigError(
                f"--ranker {ranker} does not apply with --systems: each [[systems]] entry "
                "names its ranker"
            )
        grid = load_grid(systems)
        raw = grid.model_dump()
        cfg = load_config(None, data={**raw["data"], "path": data or raw["data"]["path"]})
        ec = grid.eval.model_copy(
            update={k: v for k, v in overrides.items() if v is not None and k != "ranker"}
        )
        runs = expand_systems(grid.systems)
        published = [p.model_dump() for p in grid.published]
        reference = grid.reference
    else:
        cfg = load_config(config, data={"path": data}, eval=overrides)
        ec = cfg.eval
        runs = [SystemRun(ec.ranker, ec.ranker, dict(ec.ranker_config))]
    if options:
        ec = ec.model_copy(update={"protocol_options": {**ec.protocol_options, **options}})
    cache = cache_dir or str(_cache_root())
    catalog, rows, dataset = _eval_data(
        cfg.data,
        ec.protocol,
        data=data,
        items=items,
        interactions=interactions,
        item_columns=item_columns,
        interaction_columns=interaction_columns,
    )
    prepared = prepare_protocol(ec.protocol, catalog, rows, **ec.protocol_options)
    folder = Path(out_dir)
    results = []
    for run in runs:
        target = folder / run.name if systems is not None else folder
        result = _run_one(
            prepared,
            ec,
            name=run.name,
            ranker=run.ranker,
            config=run.config,
            dataset=dataset,
            out_dir=target,
            cache=cache,
            engine=engine,
            engine_options=_pairs(engine_option, "--engine-option"),
            resume=resume,
            progress=progress,
        )
        _write_config(
            cfg.model_copy(
                update={
                    "eval": ec.model_copy(
                        update={"ranker": run.ranker, "ranker_config": run.config}
                    )
                }
            ),
            target,
        )
        _print_result(result)
        out.print(f"summary: {target / 'summary.json'} ({result.seconds['total']:.2f} s)")
        results.append(target)
    if systems is not None:
        shutil.copyfile(systems, folder / "systems.toml")
    files = write_run_report(
        [load_run(r) for r in results],
        folder,
        metrics=ec.metrics,
        baselines=published,
        reference=(reference or 0) if len(results) > 1 else None,
    )
    out.print(f"report: {files.markdown}")


@eval_app.command("compare")
@_friendly
def eval_compare(
    run_a: Annotated[str, typer.Argument(help="Reference run folder (A).")],
    run_b: Annotated[str, typer.Argument(help="Run folder compared with it (B).")],
    metrics: Annotated[
        str, typer.Option(help="Comma-separated metrics compared per user.")
    ] = "ndcg@10,recall@10",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-metric deltas of B over A on the users both ran, with a paired bootstrap
    interval and p-value and a paired t-test."""
    from ragrec.eval import compare_runs, load_run

    comparison = compare_runs(
        load_run(run_a),
        load_run(run_b),
        [m.strip() for m in metrics.split(",") if m.strip()],
        n_boot=n_boot,
        seed=seed,
    )
    if as_json:
        out.print_json(json.dumps(comparison.to_dict()))
    else:
        out.print(comparison.to_markdown(), markup=False, highlight=False)


@eval_app.command("report")
@_friendly
def eval_report(
    runs: Annotated[list[str], typer.Argument(help="Run folders, the reference first.")],
    out_dir: Annotated[str, typer.Option("--out", help="Report folder.")] = "runs/report",
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated table columns (default: all).")
    ] = None,
    systems: Annotated[
        str | None, typer.Option(help="Systems file whose [[published]] rows to show.")
    ] = None,
) -> None:
    """Build report.md and plots from existing run folders."""
    from ragrec.eval import load_grid, load_run, write_run_report

    published = [p.model_dump() for p in load_grid(systems).published] if systems else []
    files = write_run_report(
        [load_run(r) for r in runs],
        out_dir,
        metrics=[m.strip() for m in metrics.split(",")] if metrics else None,
        baselines=published,
        reference=0 if len(runs) > 1 else None,
    )
    out.print(f"report: {files.markdown}")
