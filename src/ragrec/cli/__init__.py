"""The ``ragrec`` command-line tool (typer)."""

from ragrec.cli._app import app, main

__all__ = ["app", "main"]
