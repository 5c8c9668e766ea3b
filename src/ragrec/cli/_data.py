"""``ragrec data``: fetch and inspect datasets; and the reading of a user's own item and
interaction files (``--items``, ``--interactions``), shared by ``index`` and ``eval``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ragrec.cli._app import _cache_root, _friendly, out
from ragrec.errors import ConfigError

if TYPE_CHECKING:
    from ragrec.config import DataConfig
    from ragrec.data import Catalog, Interactions

data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)


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


# a user's own files ------------------------------------------------------------------------


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


def _read_data(
    settings: DataConfig,
    *,
    items: str | None,
    interactions: str | None,
    item_columns: str | None,
    interaction_columns: str | None,
) -> tuple[Catalog, Interactions, str, str]:
    """The catalog and interactions of ``--items`` and ``--interactions`` when both are
    given, else of the MovieLens folder or dataset name in ``settings`` (shared by
    ``index`` and ``eval``).

    Returns:
        The catalog, the interactions, where they came from (the files' names, or the
        MovieLens folder) and the dataset's name (the files' names, or the folder's).
    """
    from ragrec.data import load_movielens

    if items is not None and interactions is not None:
        catalog, events = _read_files(
            items,
            interactions,
            item_columns=item_columns,
            interaction_columns=interaction_columns,
            on_invalid=settings.on_invalid,
        )
        name = f"{Path(items).name} + {Path(interactions).name}"
        return catalog, events, name, name
    ml = load_movielens(
        _resolve_data(settings.path, settings.cache_dir), on_invalid=settings.on_invalid
    )
    return ml.catalog, ml.interactions, str(ml.path), ml.path.name
