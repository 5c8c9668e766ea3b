"""The ``ragrec`` command-line tool (typer)."""

from ragrec.cli import _eval  # noqa: F401  (registers `ragrec eval`)
from ragrec.cli._app import app, main
from ragrec.cli._serve import serve_cmd
from ragrec.cli._tune import tune_cmd

app.command("tune")(tune_cmd)
app.command("serve")(serve_cmd)

__all__ = ["app", "main"]
