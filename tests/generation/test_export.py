"""Tests for ragrec.generation._export: the cheap error paths and the reuse of an existing
export (the real conversion runs in the vLLM CI job), and ``ragrec models export``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import transformers
from typer.testing import CliRunner, Result

from ragrec.cli import app
from ragrec.errors import ConfigError
from ragrec.generation import (
    BUNDLED_MODEL,
    BackendError,
    default_export_dir,
    export_model,
    is_exported_folder,
)
from ragrec.generation._export import MARKER
from ragrec.generation._transformers import bundled_model_path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to load a tokenizer or model fail loudly."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("export_model loaded a model")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def bundled_source(dtype: str = "float32") -> dict[str, Any]:
    return {"model": BUNDLED_MODEL, "gguf_file": bundled_model_path()[1], "dtype": dtype}


def write_marker(folder: Path, source: dict[str, Any]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"source": source, "bytes": 540_000_000, "seconds": 12.5}
    (folder / MARKER).write_text(json.dumps(info))
    (folder / "model.safetensors").write_bytes(b"weights")
    return info


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class TestExportModel:
    @pytest.mark.parametrize("force", [False, True])
    def test_non_empty_folder_that_is_not_an_export(
        self, tmp_path: Path, no_loading: None, force: bool
    ) -> None:
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
        with pytest.raises(ConfigError, match="not a ragrec model export") as info:
            export_model(out, force=force)  # force never wipes a folder we did not write
        assert str(out) in str(info.value)
        assert (out / "notes.txt").read_text() == "keep me"
        assert listing(tmp_path) == ["mine", "mine/notes.txt"]

    def test_a_file_is_not_a_folder(self, tmp_path: Path, no_loading: None) -> None:
        out = tmp_path / "export"
        out.write_text("x")
        with pytest.raises(ConfigError, match="is a file"):
            export_model(out)
        assert out.read_text() == "x"

    def test_folder_model_needs_gguf_file(self, tmp_path: Path, no_loading: None) -> None:
        with pytest.raises(ConfigError, match="gguf_file") as info:
            export_model(tmp_path / "out", model=str(tmp_path))
        assert repr(str(tmp_path)) in str(info.value)
        assert "--gguf-file" in str(info.value)
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("dtype", ["int8", "fp16", "auto", ""])
    def test_bad_dtype(self, tmp_path: Path, no_loading: None, dtype: str) -> None:
        with pytest.raises(ConfigError, match="float32, bfloat16, float16") as info:
            export_model(tmp_path / "out", dtype=dtype)
        assert repr(dtype) in str(info.value)
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
    def test_existing_export_is_reused(self, tmp_path: Path, no_loading: None, dtype: str) -> None:
        out = tmp_path / "export"
        info = write_marker(out, bundled_source(dtype))
        before = listing(tmp_path)
        result = export_model(out, dtype=dtype)
        assert result["reused"] is True
        assert result["path"] == str(out)
        assert result["source"] == bundled_source(dtype)
        assert result["bytes"] == info["bytes"]
        assert listing(tmp_path) == before  # nothing written beside it either
        assert is_exported_folder(out)

    def test_export_of_another_source_needs_force(self, tmp_path: Path, no_loading: None) -> None:
        out = tmp_path / "export"
        write_marker(out, bundled_source("bfloat16"))
        with pytest.raises(ConfigError, match="--force") as info:
            export_model(out, dtype="float32")
        assert "bfloat16" in str(info.value)
        assert (out / "model.safetensors").read_bytes() == b"weights"

    def test_unreadable_marker(self, tmp_path: Path, no_loading: None) -> None:
        out = tmp_path / "export"
        out.mkdir()
        (out / MARKER).write_text("{not json")
        with pytest.raises(ConfigError, match="--force"):
            export_model(out)

    def test_force_goes_past_an_existing_export(self, tmp_path: Path) -> None:
        # the source cannot be read: force reaches the loading step and fails there,
        # leaving the existing export and no temporary folder behind
        src = tmp_path / "src"
        src.mkdir()
        out = tmp_path / "export"
        source = {"model": str(src), "gguf_file": "missing.gguf", "dtype": "float32"}
        write_marker(out, source)
        assert export_model(out, model=str(src), gguf_file="missing.gguf")["reused"] is True
        before = listing(tmp_path)
        with pytest.raises(BackendError, match=r"missing\.gguf"):
            export_model(out, model=str(src), gguf_file="missing.gguf", force=True)
        assert listing(tmp_path) == before

    def test_is_exported_folder(self, tmp_path: Path) -> None:
        assert not is_exported_folder(tmp_path)
        assert not is_exported_folder(tmp_path / "missing")
        (tmp_path / MARKER).mkdir()
        assert not is_exported_folder(tmp_path)  # a folder named like the marker is not one
        write_marker(tmp_path / "export", bundled_source())
        assert is_exported_folder(tmp_path / "export")


class TestDefaultExportDir:
    def test_honours_the_cache_dir_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("RAGREC_CACHE_DIR", str(tmp_path / "cache"))
        assert default_export_dir(BUNDLED_MODEL) == tmp_path / "cache" / "models" / (
            f"{BUNDLED_MODEL}-hf"
        )
        assert default_export_dir("/models/My-GGUF") == tmp_path / "cache/models/My-GGUF-hf"

    def test_explicit_root_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RAGREC_CACHE_DIR", str(tmp_path / "cache"))
        assert default_export_dir(BUNDLED_MODEL, tmp_path / "root") == (
            tmp_path / "root" / "models" / f"{BUNDLED_MODEL}-hf"
        )

    @pytest.mark.parametrize("value", [None, ""])
    def test_home_cache_without_the_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
    ) -> None:
        if value is None:
            monkeypatch.delenv("RAGREC_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("RAGREC_CACHE_DIR", value)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert default_export_dir(BUNDLED_MODEL) == (
            tmp_path / ".cache" / "ragrec" / "models" / f"{BUNDLED_MODEL}-hf"
        )


class TestCli:
    runner = CliRunner()

    def invoke(self, *args: str) -> Result:
        return self.runner.invoke(app, ["models", "export", *args])

    def one_line_error(self, result: Result) -> str:
        assert result.exit_code == 2, result.output
        lines = _ANSI.sub("", result.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error:")
        assert "Traceback" not in result.output
        return lines[0]

    def test_non_empty_folder(self, tmp_path: Path, no_loading: None) -> None:
        (tmp_path / "notes.txt").write_text("keep me")
        line = self.one_line_error(self.invoke("--out", str(tmp_path)))
        assert "not a ragrec model export" in line
        assert (tmp_path / "notes.txt").read_text() == "keep me"

    def test_bad_dtype(self, tmp_path: Path, no_loading: None) -> None:
        line = self.one_line_error(self.invoke("--out", str(tmp_path / "x"), "--dtype", "int4"))
        assert "'int4'" in line

    def test_reuses_the_default_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_loading: None
    ) -> None:
        monkeypatch.setenv("RAGREC_CACHE_DIR", str(tmp_path))
        write_marker(tmp_path / "models" / f"{BUNDLED_MODEL}-hf", bundled_source())
        result = self.invoke()
        assert result.exit_code == 0, result.output
        out = _ANSI.sub("", result.stdout)
        assert "already exported" in out
        assert "540 MB" in out
        assert f"{BUNDLED_MODEL}-hf" in out.replace("\n", "")  # rich wraps long paths
