"""``ragrec serve``: the HTTP service over a store (FastAPI + uvicorn)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ragrec.cli._app import _friendly, _load_store, _quiet_model_loading, err
from ragrec.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["serve_cmd", "worker_app"]

TOKEN_ENV = "RAGREC_SERVE_TOKEN"
_STORE_ENV = "RAGREC_SERVE_STORE"  # how `--workers N` hands the store to each worker


def _need_serving_packages() -> None:
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ragrec serve needs {' and '.join(missing)}: install the serve extra, "
            "pip install 'ragrec[serve]'"
        )


def worker_app() -> FastAPI:
    """The app of one worker process (``--workers N``): loads the store named by the
    serving command's environment; each worker holds its own model."""
    from ragrec import Recommender
    from ragrec.serve import create_app

    _quiet_model_loading()
    store = os.environ.get(_STORE_ENV)
    if not store:
        raise ConfigError(f"{_STORE_ENV} is not set; start workers with `ragrec serve`")
    return create_app(
        Recommender.load(store), token=os.environ.get(TOKEN_ENV) or None, close_on_shutdown=True
    )


@_friendly
def serve_cmd(
    store: Annotated[str, typer.Argument(help="Store folder (from `ragrec index`).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes, each with its own copy of the model; they share the "
            "feedback store (SQLite in WAL mode on one machine, or PostgreSQL)."
        ),
    ] = 1,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            help="Bearer token that POST /feedback and DELETE /users/{id} require (prefer "
            f"the {TOKEN_ENV} environment variable: a command line is visible to others).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")
    ] = "info",
    access_log: Annotated[
        bool, typer.Option(help="Log every request (GET /metrics counts them anyway).")
    ] = False,
) -> None:
    """Serve a store over HTTP: POST /recommend, POST /feedback, DELETE /users/{id},
    GET /health, GET /metrics; OpenAPI docs at /docs."""
    _need_serving_packages()
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} must be within 1-65535")
    if token is not None and (not token.strip() or token != token.strip()):
        raise ConfigError("--token must be non-empty text without surrounding blanks")
    if not (Path(store) / "manifest.json").is_file():
        raise ConfigError(
            f"{store} is not a ragrec store (no manifest.json); build one with `ragrec index`"
        )
    where = f"http://{host}:{port}"
    guard = "feedback and forget need the bearer token" if token else "no token: writes are open"
    if workers == 1:
        from ragrec.serve import create_app

        app = create_app(_load_store(store), token=token, close_on_shutdown=True)
        err.print(f"serving {escape(store)} on {where} (docs: {where}/docs; {guard})")
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    os.environ[_STORE_ENV] = str(Path(store).resolve())
    if token:
        os.environ[TOKEN_ENV] = token
    err.print(
        f"serving {escape(store)} on {where} with {workers} workers (docs: {where}/docs; {guard})"
    )
    uvicorn.run(
        "ragrec.cli._serve:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
    )
