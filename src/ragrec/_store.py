"""The store directory a :class:`~ragrec.Recommender` saves and loads: manifest, config,
catalog, interactions, channel weights, exemplar pool, retriever state, feedback
database; every file replaced atomically."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ragrec._recommender_config import RecommenderConfig, parse_recommender_config
from ragrec._version import __version__
from ragrec.data import (
    STORE_TEXT_PREFIX,
    Catalog,
    Interactions,
    catalog_from_store_frame,
    interactions_from_store_frame,
)
from ragrec.errors import ConfigError, RagrecError
from ragrec.feedback import FeedbackStore, open_store
from ragrec.prompting import ExemplarPool
from ragrec.retrieval import ChannelWeights, Retriever, RetrieverConfig, StaleRetrieverStateError

logger = logging.getLogger(__name__)

__all__ = ["STORE_FILES", "STORE_FORMAT", "StoreContents", "read_store", "write_store"]

STORE_FORMAT = 1
"""Version of the store directory layout this ragrec writes and reads."""

STORE_FILES = (
    "config.json",
    "catalog.parquet",
    "interactions.parquet",
    "weights.json",
    "exemplars.json",
    "feedback.sqlite",
)

_RETIRED_KEYS = {"explain": ("history_items", "constrained")}
"""Config keys that older stores saved and this ragrec no longer has (explanations are
built from retrieval evidence since store format 1 of this release)."""

T = TypeVar("T")


@dataclass(frozen=True)
class StoreContents:
    """What :func:`read_store` read (``retriever`` is None when its saved state is stale
    or missing: fit it again)."""

    config: RecommenderConfig
    catalog: Catalog
    interactions: Interactions
    weights: ChannelWeights
    pool: ExemplarPool
    retriever: Retriever | None


def new_store_folder(path: str | Path) -> Path:
    """``path`` created as an empty store folder.

    Raises:
        ConfigError: It holds a store already, or is a file.
    """
    folder = Path(path)
    if (folder / "manifest.json").exists():
        raise ConfigError(
            f"path={str(folder)!r} already holds a ragrec store; load it with "
            "Recommender.load, or choose another folder"
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"path={str(folder)!r} is a file; pass a folder for the store")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def feedback_location(
    url: str | None, path: Path | None
) -> tuple[str, tempfile.TemporaryDirectory[str] | None]:
    """Where the feedback database is: the configured URL, the store folder's
    ``feedback.sqlite``, or (not saved yet) a private temporary database, moved into the
    store on save; with the temporary folder to clean up."""
    if url:
        return url, None
    if path is not None:
        return str(path / "feedback.sqlite"), None
    tmp = tempfile.TemporaryDirectory(prefix="ragrec-feedback-")
    return str(Path(tmp.name) / "feedback.sqlite"), tmp


def check_save_target(current: Path | None, folder: Path) -> bool:
    """Whether ``folder`` is the store's own folder (``current``).

    Raises:
        ConfigError: ``folder`` holds another store (never overwritten).
    """
    same = current is not None and current.resolve() == folder.resolve()
    if not same and (folder / "manifest.json").exists():
        raise ConfigError(
            f"path={str(folder)!r} holds another ragrec store; save into a new "
            "folder, or delete that store first"
        )
    return same


def retriever_config(config: RecommenderConfig, path: Path | None) -> RetrieverConfig:
    """The retriever's config, with the store folder as its embedding cache."""
    retriever = config.retriever
    if path is not None and retriever.cache_dir is None:
        retriever = retriever.model_copy(update={"cache_dir": str(path)})
    return retriever


def write_store(
    folder: Path,
    *,
    config: RecommenderConfig,
    catalog: Catalog,
    interactions: Interactions,
    retriever: Retriever,
    pool: ExemplarPool,
) -> None:
    """Write every file of the store but the feedback database and the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "config.json", config.model_dump_json(indent=2))
    _write_frame(folder / "catalog.parquet", catalog.to_frame(text_prefix=STORE_TEXT_PREFIX))
    _write_frame(folder / "interactions.parquet", interactions.to_frame())
    atomic_write(folder / "weights.json", retriever.weights.to_json())
    pool.save(folder / "exemplars.json")
    retriever.save(folder / "retrieval")


def write_manifest(folder: Path) -> None:
    """Mark ``folder`` as a complete store (written last)."""
    manifest = {
        "format": STORE_FORMAT,
        "ragrec": __version__,
        "saved": time.time(),
        "files": list(STORE_FILES),
    }
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2))


def read_store(folder: Path) -> StoreContents:
    """Read a store directory written by :func:`write_store`.

    Raises:
        ConfigError: Not a store, written by a newer format than this ragrec reads, or a
            file of it is missing or damaged (names the file).
    """
    _check_manifest(folder)

    def read(name: str, parse: Callable[[Path], T]) -> T:
        file = folder / name
        if not file.is_file():
            raise ConfigError(
                f"{folder} is incomplete: {name} is missing; restore it from a backup, "
                "or rebuild the store"
            )
        try:
            return parse(file)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if isinstance(exc, RagrecError):
                raise
            raise ConfigError(
                f"{file} is damaged ({type(exc).__name__}: {exc}); restore it from a "
                "backup, or rebuild the store"
            ) from exc

    config = read(
        "config.json",
        lambda f: parse_recommender_config(_migrate_config(json.loads(f.read_text()))),
    )
    catalog = read("catalog.parquet", lambda f: catalog_from_store_frame(pd.read_parquet(f)))
    interactions = read(
        "interactions.parquet", lambda f: interactions_from_store_frame(pd.read_parquet(f))
    )
    weights = read("weights.json", lambda f: ChannelWeights.from_json(f.read_text()))
    pool = read("exemplars.json", lambda f: ExemplarPool.load(f, config.exemplars))
    if config.feedback_url is None and not (folder / "feedback.sqlite").is_file():
        # a new, empty database would silently drop every stored event
        raise ConfigError(
            f"{folder} is incomplete: feedback.sqlite is missing; restore it from a "
            "backup, or rebuild the store"
        )
    retriever: Retriever | None
    try:
        retriever = Retriever.load(
            folder / "retrieval", retriever_config(config, folder), catalog, interactions
        )
    except StaleRetrieverStateError as exc:
        # an older store, or one whose files changed: fit again (slow, but correct)
        logger.info("fitting the retriever again: %s", exc)
        retriever = None
    return StoreContents(config, catalog, interactions, weights, pool, retriever)


def _check_manifest(folder: Path) -> None:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"{folder} is not a ragrec store (no manifest.json); build one with "
            "`ragrec index` or Recommender.build(..., path=...)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        fmt = manifest["format"]
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
            raise TypeError(f"format {fmt!r} is not a positive integer")
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError(
            f"{manifest_path} is damaged ({type(exc).__name__}: {exc}); restore the "
            "store from a backup, or rebuild it"
        ) from exc
    if fmt > STORE_FORMAT:
        raise ConfigError(
            f"{folder} was written by ragrec {manifest.get('ragrec')} (store format {fmt}); "
            f"this ragrec {__version__} reads format {STORE_FORMAT}: upgrade ragrec"
        )


def _migrate_config(raw: Any) -> Any:
    """A saved config with retired keys dropped (logged), so older stores still load."""
    if not isinstance(raw, dict):
        return raw
    for section, keys in _RETIRED_KEYS.items():
        table = raw.get(section)
        if isinstance(table, dict):
            for key in keys:
                if key in table:
                    logger.info("store config: %s.%s is no longer used; ignored", section, key)
                    table.pop(key)
    return raw


def save_refit_retriever(folder: Path, retriever: Retriever) -> None:
    """Save a retriever fit again after its saved state was stale (a failure is logged:
    the store stays usable, the next load fits again)."""
    try:
        retriever.save(folder / "retrieval")
    except OSError as exc:
        logger.warning("retriever state not saved in %s: %s", folder, exc)


def move_database(store: FeedbackStore, folder: Path) -> FeedbackStore:
    """Copy a SQLite feedback store into ``folder`` (consistent, via SQLite's backup API),
    close it, and open the copy."""
    source = Path(store.location)
    store.close()
    _copy_sqlite(source, folder / "feedback.sqlite")
    return open_store(str(folder / "feedback.sqlite"))


def _copy_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def compact_sqlite(path: Path) -> None:
    """Rewrite a SQLite database without free pages and empty its WAL file, so rows just
    deleted leave no bytes behind (SQLite keeps old page images in the WAL until a
    checkpoint, and freed pages keep their content unless built with secure_delete)."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as exc:
        logger.warning(
            "feedback store %s: could not compact after forgetting a user (%s); the rows "
            "are deleted, but their bytes may stay in the file until VACUUM succeeds",
            path,
            exc,
        )
        return
    finally:
        conn.close()
    if busy:
        logger.warning(
            "feedback store %s: another connection is reading; the WAL file keeps old pages "
            "until the next checkpoint",
            path,
        )


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (never half-written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
