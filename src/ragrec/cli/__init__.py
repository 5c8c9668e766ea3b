"""The ``ragrec`` command-line tool (typer)."""

from ragrec.cli import _eval  # noqa: F401  (registers `ragrec eval`)
from ragrec.cli._app import app, main

__all__ = ["app", "main"]
