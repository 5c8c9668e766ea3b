"""``ragrec serve`` refuses bad options in one line before loading anything (it is run
for real, with workers, in test_load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.test_cli import _assert_one_line_error, _invoke


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--workers", "0"], "--workers 0 must be >= 1"),
        (["--port", "70000"], "--port 70000"),
        (["--token", " padded "], "--token must be non-empty"),
    ],
)
def test_bad_options(tmp_path: Path, extra: list[str], needle: str) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    _assert_one_line_error(_invoke("serve", str(tmp_path), *extra), needle)


def test_not_a_store(tmp_path: Path) -> None:
    _assert_one_line_error(_invoke("serve", str(tmp_path / "nope")), "is not a ragrec store")


def test_help_lists_the_routes() -> None:
    result = _invoke("serve", "--help")
    assert result.exit_code == 0
    assert "/recommend" in result.output
    assert "RAGREC_SERVE_TOKEN" in result.output
