"""The ``ragrec`` command: the typer app, its console streams and the helpers the command
groups share (friendly errors, the cache folder, progress while models load). The
command groups live in modules of their own and are registered in
:mod:`ragrec.cli`."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ragrec._version import __version__
from ragrec.errors import RagrecError

if TYPE_CHECKING:
    from ragrec import Recommender

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="ragrec",
    help="Retrieval-augmented, prompt-based recommendation with a generative LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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


# progress while models load ------------------------------------------------------------------


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


def main() -> None:
    """Entry point of the ``ragrec`` script."""
    app()
