"""``ragrec models``: prepare LLMs for the backends."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragrec.cli._app import _cache_root, _friendly, out

models_app = typer.Typer(help="Prepare LLMs for the backends.", no_args_is_help=True)


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
