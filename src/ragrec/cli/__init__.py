"""The ``ragrec`` command-line tool (typer).

Each command group has a module of its own; they are registered on the app here, in the
order ``ragrec --help`` lists them.
"""

from ragrec.cli._app import app, main
from ragrec.cli._config_cmd import config_app
from ragrec.cli._data import data_app
from ragrec.cli._eval import eval_app
from ragrec.cli._models import models_app
from ragrec.cli._serve import serve_cmd
from ragrec.cli._store import chat_cmd, fit_fusion_cmd, index_cmd, recommend_cmd
from ragrec.cli._tune import tune_cmd

app.command("index")(index_cmd)
app.command("fit-fusion")(fit_fusion_cmd)
app.command("recommend")(recommend_cmd)
app.command("chat")(chat_cmd)
app.command("tune")(tune_cmd)
app.command("serve")(serve_cmd)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")

__all__ = ["app", "main"]
