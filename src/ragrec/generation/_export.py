"""Exporting a GGUF model as the plain Hugging Face folder that vLLM and servers read."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ragrec.errors import ConfigError
from ragrec.generation._base import BUNDLED_MODEL, BackendError

logger = logging.getLogger(__name__)

__all__ = [
    "ExportResult",
    "default_export_dir",
    "export_model",
    "is_exported_folder",
    "load_trainable",
    "merge_adapter",
]

MARKER = "ragrec-export.json"
"""Written last into an exported folder: what was exported, from where."""


class ExportResult(dict[str, Any]):
    """What :func:`export_model` wrote: ``path``, ``source``, ``gguf_file``, ``bytes``,
    ``seconds`` and ``reused`` (True when an identical export already existed)."""


def is_exported_folder(path: str | Path) -> bool:
    """True when ``path`` holds a complete export (its marker file is written last)."""
    return (Path(path) / MARKER).is_file()


def export_model(
    out: str | Path,
    *,
    model: str = BUNDLED_MODEL,
    gguf_file: str | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> ExportResult:
    """Write ``model`` (a GGUF, by default the bundled SmolLM2) as a Hugging Face folder:
    dequantized weights (safetensors), config and tokenizer, which vLLM and
    OpenAI-compatible servers load.

    The folder is written beside ``out`` under a temporary name and renamed when
    complete, so a crash never leaves a half-written model behind.

    Args:
        out: Target folder.
        model: ``smollm2-135m-instruct`` (bundled) or a folder holding ``gguf_file``.
        gguf_file: GGUF file name inside ``model`` (set for the bundled model).
        dtype: Weight dtype of the export (float32, bfloat16, float16).
        force: Overwrite an existing export.

    Raises:
        ConfigError: ``out`` exists and is not an export of this model (or ``force`` is
            off and it is), or the source is not a GGUF.
        BackendError: transformers could not read the source.
    """
    from ragrec.generation._transformers import bundled_model_path

    gguf: str | None
    if model == BUNDLED_MODEL:
        folder, gguf = bundled_model_path()
    else:
        folder, gguf = model, gguf_file
    if not gguf:
        raise ConfigError(
            f"model {model!r} has no gguf_file; export converts a GGUF (pass --gguf-file NAME "
            "with a folder, or use the bundled model). A Hugging Face folder needs no export"
        )
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
    target = Path(out)
    source = {"model": model, "gguf_file": gguf, "dtype": dtype}
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file, not a folder; choose an empty or new folder")
    if target.exists():
        marker = target / MARKER
        if marker.is_file() and not force:
            try:
                previous = json.loads(marker.read_text())
            except ValueError as exc:
                raise ConfigError(
                    f"{marker} is not valid JSON ({exc}); pass --force to overwrite the export "
                    "or choose another folder"
                ) from exc
            if previous.get("source") == source:
                return ExportResult(path=str(target), reused=True, **previous)
            raise ConfigError(
                f"{target} holds an export of {previous.get('source')}; pass --force to "
                "overwrite it or choose another folder"
            )
        if not marker.is_file() and any(target.iterdir()):
            raise ConfigError(
                f"{target} exists and is not a ragrec model export; choose an empty or new folder"
            )
    start = time.perf_counter()
    hf_model, tokenizer = load_trainable(folder, gguf, dtype=dtype)
    _write_folder(target, hf_model, tokenizer, source, start)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    logger.info("exported %s to %s (%.0f MB)", model, target, size / 1e6)
    return ExportResult(path=str(target), reused=False, **json.loads((target / MARKER).read_text()))


def load_trainable(
    folder: str, gguf_file: str | None, *, dtype: str = "float32"
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a GGUF (dequantized, plain float weights that train and
    ``save_pretrained`` like any model) or a Hugging Face folder.

    Raises:
        BackendError: transformers could not read the source.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    tok_kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
        tok_kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **tok_kwargs)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not read {folder}/{gguf_file or ''} ({exc})") from exc
    # save_pretrained refuses GGUF-quantized models; the weights are dequantized already.
    hf_model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    return hf_model, tokenizer


def merge_adapter(
    adapter: str | Path,
    out: str | Path,
    *,
    model: str = BUNDLED_MODEL,
    gguf_file: str | None = None,
    dtype: str = "float32",
) -> ExportResult:
    """Merge a peft LoRA adapter (from ``ragrec tune``) into its base model and write the
    plain Hugging Face folder that vLLM and OpenAI-compatible servers load.

    Args:
        adapter: The adapter folder (or a tuning run folder holding ``adapter/``).
        out: Target folder (new or empty).
        model: The adapter's base model (bundled name, GGUF folder or HF folder).
        gguf_file: GGUF file inside ``model``.
        dtype: Weight dtype of the merged folder.

    Raises:
        ConfigError: ``adapter`` is not an adapter folder, or ``out`` is not empty.
        BackendError: The base model could not be read.
    """
    from peft import PeftModel

    from ragrec.generation._transformers import bundled_model_path, resolve_adapter

    path = resolve_adapter(str(adapter))
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"out={str(target)!r} exists and is not an empty folder; choose another")
    folder, gguf = bundled_model_path() if model == BUNDLED_MODEL else (model, gguf_file)
    start = time.perf_counter()
    base, tokenizer = load_trainable(folder, gguf, dtype=dtype)
    merged = PeftModel.from_pretrained(base, path).merge_and_unload()
    source = {"model": model, "gguf_file": gguf, "dtype": dtype, "adapter": path}
    _write_folder(target, merged, tokenizer, source, start)
    return ExportResult(path=str(target), reused=False, **json.loads((target / MARKER).read_text()))


def _write_folder(target: Path, hf_model: Any, tokenizer: Any, source: Any, start: float) -> None:
    """Save model and tokenizer beside ``target`` and rename into place when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an export is shared like any model folder
    try:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        info = {
            "source": source,
            "bytes": size,
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_export_dir(model: str, cache_root: str | Path | None = None) -> Path:
    """Where an export of ``model`` lives by default:
    ``<cache root>/models/<model name>-hf`` (cache root: $RAGREC_CACHE_DIR or
    ~/.cache/ragrec)."""
    if cache_root is None:
        env = os.environ.get("RAGREC_CACHE_DIR")
        cache_root = Path(env) if env else Path.home() / ".cache" / "ragrec"
    name = Path(model).name if model != BUNDLED_MODEL else model
    return Path(cache_root) / "models" / f"{name}-hf"
