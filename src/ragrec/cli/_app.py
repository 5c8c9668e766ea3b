"""The ``ragrec`` command."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragrec._version import __version__
from ragrec.errors import ConfigError, RagrecError, describe_validation_error

if TYPE_CHECKING:
    from ragrec import Recommendation, Recommender
    from ragrec.config import RagrecConfig
    from ragrec.data import Catalog, Interactions

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


# serving: index, recommend, chat --------------------------------------------------------------


def _quiet_model_loading() -> None:
    """Leave progress to the CLI's spinner: the model libraries' own tqdm bars (weights
    loading, GGUF conversion) would scribble over it. Set before they are imported; an
    explicit setting in the environment wins."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _StageHandler(logging.Handler):
    """Shows ragrec's log messages as the text of a spinner (and, with ``keep``, as lines;
    with ``warnings``, warnings as lines)."""

    def __init__(self, update: Callable[[str], None], *, keep: bool, warnings: bool) -> None:
        super().__init__(logging.INFO)
        self._update, self._keep, self._warnings = update, keep, warnings

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not break the command
            return
        if record.levelno >= logging.WARNING:
            if self._warnings:
                err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
            return
        self._update(message)
        if self._keep:
            err.print(f"[dim]  {escape(message)}[/]", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _stages(label: str, *, enabled: bool = True, keep: bool = False) -> Iterator[None]:
    """A spinner on stderr while models load or items are embedded.

    Its text follows ragrec's INFO log messages (which model is loading, how many items
    were embedded); with ``keep`` each message also stays as a line, so the steps of a
    long build remain visible. Nothing is animated when stderr is not a terminal.
    """
    if not enabled:
        yield
        return
    lib = logging.getLogger("ragrec")
    old_level, old_propagate = lib.level, lib.propagate
    # without --verbose the INFO messages are taken for the spinner only; with it, the
    # root handler already prints every message, so the spinner just follows them
    takeover = lib.getEffectiveLevel() > logging.INFO
    with err.status(escape(label)) as status:
        handler = _StageHandler(
            lambda message: status.update(f"{escape(label)}: {escape(message)}"),
            keep=keep and takeover,
            warnings=takeover,
        )
        if takeover:
            lib.setLevel(logging.INFO)
            lib.propagate = False
        lib.addHandler(handler)
        try:
            yield
        finally:
            lib.removeHandler(handler)
            lib.setLevel(old_level)
            lib.propagate = old_propagate


def _load_store(store: str, *, progress: bool = True) -> Recommender:
    from ragrec import Recommender

    _quiet_model_loading()
    with _stages(f"opening {store}", enabled=progress):
        return Recommender.load(store)


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


def _parse_columns(option: str, value: str | None) -> dict[str, str]:
    """``"item=movieId,title=name"`` as ``{"item": "movieId", "title": "name"}``."""
    if not value:
        return {}
    mapping = {}
    for pair in value.split(","):
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ConfigError(
                f"{option} {value!r}: {pair!r} is not FIELD=COLUMN; write e.g. "
                f"{option} item=movieId,title=name"
            )
        mapping[key.strip()] = column.strip()
    return mapping


def _with_present(
    mapping: Mapping[str, str], columns: Any, optional: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """``mapping`` plus each optional field whose conventional column the file has."""
    out = dict(mapping)
    present = {str(c) for c in columns}
    for name, candidates in optional.items():
        if name not in out:
            found = next((c for c in candidates if c in present), None)
            if found is not None:
                out[name] = found
    return out


def _read_items(items: str, *, item_columns: str | None, on_invalid: str) -> Catalog:
    from ragrec.data import Catalog, read_table

    path = Path(items)
    frame = read_table(path)
    return Catalog.from_frame(
        frame,
        columns=_with_present(
            _parse_columns("--item-columns", item_columns),
            frame.columns,
            {"genres": ("genres",), "year": ("year",), "description": ("description",)},
        ),
        on_invalid=on_invalid,  # type: ignore[arg-type]
        source=path.name,
    )


def _read_files(
    items: str,
    interactions: str,
    *,
    item_columns: str | None,
    interaction_columns: str | None,
    on_invalid: str,
) -> tuple[Catalog, Interactions]:
    """The catalog and interactions of ``--items`` and ``--interactions`` files (shared
    by ``index`` and ``eval``)."""
    from ragrec.data import Interactions, read_table

    catalog = _read_items(items, item_columns=item_columns, on_invalid=on_invalid)
    inter_path = Path(interactions)
    frame = read_table(inter_path)
    events = Interactions.from_frame(
        frame,
        columns=_with_present(
            _parse_columns("--interaction-columns", interaction_columns),
            frame.columns,
            {"value": ("value", "rating"), "timestamp": ("timestamp",), "kind": ("kind",)},
        ),
        catalog=catalog,
        on_invalid=on_invalid,  # type: ignore[arg-type]
        source=inter_path.name,
    )
    return catalog, events


# The options that read a user's own files, shared by `index` and `eval`.
ItemsOption = Annotated[
    str | None,
    typer.Option(
        "--items",
        help="Item file (CSV/TSV/JSONL/Parquet) with item_id and title columns; "
        "genres, year, description are used when present. Needs --interactions.",
    ),
]
InteractionsOption = Annotated[
    str | None,
    typer.Option(
        "--interactions",
        help="Interaction file with user_id and item_id columns; value (or rating), "
        "timestamp, kind are used when present.",
    ),
]
ItemColumnsOption = Annotated[
    str | None,
    typer.Option(
        "--item-columns",
        help="Columns of --items by field (item, title, genres, year, description), "
        "e.g. item=movieId,title=name.",
    ),
]
InteractionColumnsOption = Annotated[
    str | None,
    typer.Option(
        "--interaction-columns",
        help="Columns of --interactions by field (user, item, value, timestamp, kind), "
        "e.g. user=userId,item=movieId,value=rating.",
    ),
]


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


@app.command("index")
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
    from ragrec.data import load_movielens

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
        if items is not None and interactions is not None:
            catalog, events = _read_files(
                items,
                interactions,
                item_columns=item_columns,
                interaction_columns=interaction_columns,
                on_invalid=cfg.data.on_invalid,
            )
            source = f"{Path(items).name} + {Path(interactions).name}"
        else:
            ml = load_movielens(
                _resolve_data(cfg.data.path, cfg.data.cache_dir), on_invalid=cfg.data.on_invalid
            )
            catalog, events, source = ml.catalog, ml.interactions, str(ml.path)
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


@app.command("fit-fusion")
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


def _recommendation_table(rec: Recommendation) -> Table:
    notes = [f"user {rec.user_id}"]
    if rec.query:
        notes.append(f"query {rec.query!r}")
    if rec.cold_start:
        notes.append("cold start: no history, popular and matching items")
    if rec.degraded:
        notes.append(f"degraded: {rec.reason}")
    explained = any(item.explanation is not None for item in rec.items)
    caption = f"recommendation {rec.id} ({rec.timings.get('total', 0.0):.2f} s)"
    if explained:
        n_llm = sum(1 for it in rec.items if it.explanation and it.explanation.source == "llm")
        caption += f"; explanations: {n_llm} written by the LLM, the rest from the evidence"
    table = Table(title=escape(" | ".join(notes)), caption=escape(caption))
    table.add_column("#", justify="right")
    table.add_column("title", ratio=2)
    table.add_column("score", justify="right")
    table.add_column("channels (rank)", ratio=1)
    if explained:
        table.add_column("explanation", ratio=3)
    for item in rec.items:
        row = [
            str(item.rank),
            escape(item.title),
            f"{item.score:.3f}",
            escape(" ".join(f"{c}:{r}" for c, r, _ in item.channels)),
        ]
        if explained:
            row.append(escape(item.explanation.text) if item.explanation else "")
        table.add_row(*row)
    return table


@app.command("recommend")
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
    out.print(_recommendation_table(result))
    if result.llm_note:
        out.print(escape(result.llm_note))


@app.command("chat")
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
    from ragrec.cli._chat import ChatSession, parse_user_id, render, run_interactive, run_script

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


def main() -> None:
    """Entry point of the ``ragrec`` script."""
    app()
