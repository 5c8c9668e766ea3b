"""The commands over a store: ``index`` (build one), ``fit-fusion``, ``recommend`` and
``chat``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ragrec.cli._app import _friendly, _load_store, _quiet_model_loading, _stages, out
from ragrec.cli._data import (
    InteractionColumnsOption,
    InteractionsOption,
    ItemColumnsOption,
    ItemsOption,
    _read_data,
)
from ragrec.cli._render import recommendation_table, render
from ragrec.errors import ConfigError, describe_validation_error

if TYPE_CHECKING:
    from ragrec.config import RagrecConfig


def _check_user_type(store: str, user: str) -> None:
    """Fail fast on a user id of the wrong type, before the slow load of the store.

    Reads only the type of the user id column; anything unexpected is left to
    ``Recommender.load`` and the check after it.
    """
    from ragrec.cli._chat import coerce_user_id

    folder = Path(store)
    if not (folder / "manifest.json").is_file():
        return
    try:
        import pyarrow.parquet as pq
        import pyarrow.types as pat

        kind = pq.read_schema(folder / "interactions.parquet").field("user_id").type
    except Exception:  # another layout or a damaged store: load() reports it
        return
    coerce_user_id(user, integer=pat.is_integer(kind))


def _index_config(
    path: str | None, *, data: str | None, on_invalid: str | None, cache_dir: str | None
) -> tuple[RagrecConfig, dict[str, Any]]:
    """The [data] settings and the [recommender] table of a TOML file, with the options
    applied. Only ``recommender``, ``data`` and ``eval`` tables are allowed (so one file
    serves ``eval`` and ``index``); a typo in any key is an error."""
    from pydantic import ValidationError

    from ragrec import RecommenderConfig
    from ragrec.config import RagrecConfig, read_toml

    raw, source = read_toml(path)
    unknown = sorted(set(raw) - {"recommender", "data", "eval"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown table(s) {unknown}; index reads [recommender] (a "
            "RecommenderConfig) and [data]"
        )
    for name in ("recommender", "data"):
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
    section = {k: v for k, v in {"path": data, "on_invalid": on_invalid}.items() if v is not None}
    rest = {k: v for k, v in raw.items() if k != "recommender"}
    rest["data"] = {**raw.get("data", {}), **section}
    try:
        cfg = RagrecConfig.model_validate(rest)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid configuration: {describe_validation_error(exc)}"
        ) from exc
    recommender = dict(raw.get("recommender", {}))
    if cache_dir is not None:
        retriever = recommender.get("retriever", {})
        if not isinstance(retriever, dict):
            raise ConfigError(f"{source}: [recommender.retriever] must be a table")
        recommender["retriever"] = {**retriever, "cache_dir": cache_dir}
    try:
        RecommenderConfig.model_validate(recommender)
    except ValidationError as exc:
        hint = " (see RecommenderConfig for the keys)"
        raise ConfigError(
            f"{source}: invalid [recommender]: {describe_validation_error(exc, unknown_hint=hint)}"
        ) from exc
    return cfg, recommender


@_friendly
def index_cmd(
    store: Annotated[str, typer.Argument(help="Store folder to create (new or empty).")],
    data: Annotated[
        str | None,
        typer.Option(
            help="MovieLens folder or dataset name (movielens-small); default: the path in "
            "the data table of --config, else movielens-small."
        ),
    ] = None,
    items: ItemsOption = None,
    interactions: InteractionsOption = None,
    item_columns: ItemColumnsOption = None,
    interaction_columns: InteractionColumnsOption = None,
    on_invalid: Annotated[
        str | None, typer.Option(help="Invalid rows: error (stop) | drop (skip, counted).")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help="TOML file. Its \\[recommender] table is a RecommenderConfig "
            "(\\[recommender.retriever], \\[recommender.generator], explain_top, ...), "
            "saved with the store; its \\[data] table is read as by eval."
        ),
    ] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Embedding cache folder (default: inside the store)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rebuild a store that is already there (its feedback is deleted; its "
            "embedding cache is kept).",
        ),
    ] = False,
    fusion: Annotated[
        bool,
        typer.Option(
            "--fit-fusion",
            help="Then fit the channel weights on this data's held-out newest items (as "
            "`ragrec fit-fusion`; fits every channel a second time).",
        ),
    ] = False,
) -> None:
    """Build a store: embed and index the items, fit the retrieval channels, seed the
    few-shot exemplars; from MovieLens (--data) or from item and interaction files."""
    from ragrec import Recommender

    start = time.perf_counter()
    folder = Path(store)
    if (folder / "manifest.json").exists():
        if not force:
            raise ConfigError(
                f"{folder} already holds a ragrec store; choose another folder, or pass "
                "--force to rebuild it"
            )
        for child in folder.iterdir():
            if child.name.startswith("embeddings.sqlite"):
                continue  # vectors of item texts: still valid, and slow to recompute
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    leftover = [c for c in folder.iterdir()] if folder.is_dir() else []
    if force:
        leftover = [c for c in leftover if not c.name.startswith("embeddings.sqlite")]
    if folder.exists() and (not folder.is_dir() or leftover):
        raise ConfigError(f"{folder} exists and is not an empty folder; choose a new folder")
    if (items is None) != (interactions is None):
        raise ConfigError("--items and --interactions go together; pass both (or --data)")
    if items is not None and data is not None:
        raise ConfigError("pass either --data or --items/--interactions, not both")
    cfg, rec_config = _index_config(config, data=data, on_invalid=on_invalid, cache_dir=cache_dir)
    _quiet_model_loading()
    with _stages("reading the data", enabled=progress):
        catalog, events, source, _ = _read_data(
            cfg.data,
            items=items,
            interactions=interactions,
            item_columns=item_columns,
            interaction_columns=interaction_columns,
        )
    with _stages("building the store", enabled=progress, keep=True):
        rec = Recommender.build(catalog, events, rec_config, path=folder)
    if fusion:
        with _stages("fitting the fusion on held-out items", enabled=progress, keep=True):
            rec.fit_fusion()
    summary: dict[str, Any] = {
        "store": str(rec.path),
        "source": source,
        "items": len(rec.catalog),
        "users": rec.interactions.n_users,
        "interactions": len(rec.interactions),
        "channels": list(rec.weights(None)),
        "weights": rec.weights(None),
        "embedder": rec.config.retriever.embedder.model,
        "generator": f"{rec.config.generator.backend}:{rec.config.generator.model}",
        "exemplars": len(rec.pool),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"store {escape(summary['store'])}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("source", "items", "users", "interactions", "channels", "embedder", "generator"):
        value = summary[key]
        text = (
            f"{value:,}"
            if isinstance(value, int)
            else ", ".join(value)
            if isinstance(value, list)
            else str(value)
        )
        table.add_row(key, escape(text))
    table.add_row("exemplars", f"{summary['exemplars']:,}")
    out.print(table)
    out.print(f"built {escape(summary['store'])} in {summary['seconds']:.1f} s")


@_friendly
def fit_fusion_cmd(
    store: Annotated[str, typer.Argument(help="Store folder (from `ragrec index`).")],
    metric: Annotated[str, typer.Option(help="Metric maximised: ndcg@K, recall@K, mrr@K.")] = (
        "ndcg@10"
    ),
    bootstrap: Annotated[
        int, typer.Option(help="Resampled fits averaged (0: one fit on all users).")
    ] = 10,
    max_users: Annotated[int, typer.Option(help="Held-out users used at most.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the user sample and resamples.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fit as JSON.")] = False,
) -> None:
    """Fit the store's channel weights and fusion normalisation on held-out items (each
    user's newest), fitting every channel once more without them; the weights become
    the global prior that feedback then personalises."""
    from pydantic import ValidationError

    from ragrec.retrieval import FusionFitConfig

    try:
        cfg = FusionFitConfig(metric=metric, bootstrap=bootstrap, max_users=max_users, seed=seed)
    except ValidationError as exc:
        raise ConfigError(f"fit-fusion: {describe_validation_error(exc)}") from exc
    rec = _load_store(store, progress=progress)
    with _stages("fitting the fusion on held-out items", enabled=progress, keep=True):
        fit = rec.fit_fusion(cfg)
    if as_json:
        sys.stdout.write(json.dumps(fit.as_dict()) + "\n")
        return
    table = Table(title=f"fusion fit ({fit.method}) on {fit.users:,} held-out users")
    table.add_column("channel")
    table.add_column("weight", justify="right")
    table.add_column(f"{fit.metric} alone", justify="right")
    for name, weight in fit.weights.items():
        table.add_row(escape(name), f"{weight:.3f}", f"{fit.alone.get(name, 0.0):.4f}")
    out.print(table)
    out.print(
        f"{fit.metric}: {fit.value:.4f} fitted (in-sample), {fit.prior_value:.4f} with the "
        f"previous weights; saved to {escape(str(Path(store) / 'fusion.json'))}"
    )


@_friendly
def recommend_cmd(
    store: Annotated[str, typer.Argument(help="Store folder (from `ragrec index`).")],
    user: Annotated[str, typer.Argument(help="User id; an unknown one gets cold-start items.")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many items.")] = 10,
    query: Annotated[
        str | None, typer.Option(help="Free-text request, e.g. 'space horror'.")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            help="Explain every item from its retrieval evidence; the LLM rewrites the top "
            "explain_top of them."
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the Recommendation as JSON.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a spinner on stderr.")] = True,
) -> None:
    """Recommend items to a user from a store."""
    from ragrec.cli._chat import parse_user_id

    if k < 1:
        raise ConfigError(f"--k {k} must be >= 1")
    _check_user_type(store, user)
    rec = _load_store(store, progress=progress)
    user_id = parse_user_id(rec, user)
    with _stages("recommending", enabled=progress):
        result = rec.recommend(user_id, k=k, query=query, explain=explain)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        return
    out.print(recommendation_table(result))
    if result.llm_note:
        out.print(escape(result.llm_note))


@_friendly
def chat_cmd(
    store: Annotated[str, typer.Argument(help="Store folder (from `ragrec index`).")],
    user: Annotated[
        str | None, typer.Option(help="User id (asked for when missing in a terminal).")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Items per list.")] = 5,
    explain: Annotated[bool, typer.Option(help="Explain the top items with the LLM.")] = True,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Read turns from stdin, print one JSON object per turn (also "
            "when stdin is not a terminal).",
        ),
    ] = False,
) -> None:
    """Chat with a store: type requests, get numbered recommendations, react with
    /like N or /dislike N and see the effect; /help lists the commands.

    When stdin is not a terminal (or with --json), each input line is one turn and each
    turn prints one JSON object: its "type" is recommendations, feedback, history,
    weights, why, forgot, user, help or error (an error does not end the session).
    """
    from ragrec.cli._chat import ChatSession, parse_user_id, run_interactive, run_script

    if k < 1:
        raise ConfigError(f"--k {k} must be >= 1")
    if user is not None:
        _check_user_type(store, user)
    interactive = sys.stdin.isatty() and not as_json
    rec = _load_store(store)
    session = ChatSession(rec, k=k, explain=explain)
    if user is not None:
        opened = session.switch_user(str(parse_user_id(rec, user)))
        if interactive:
            render(opened, out)
    if not interactive:

        def write(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        run_script(session, sys.stdin, write, busy=_stages)
        return
    run_interactive(session, out, busy=_stages)
