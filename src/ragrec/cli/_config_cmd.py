"""``ragrec config``: show the resolved configuration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ragrec.cli._app import _friendly, out

config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)


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
