"""Tests for the ``ragrec`` command (typer), mostly in-process through CliRunner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import ragrec
from ragrec.cli import app

runner = CliRunner()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    """Output without colour codes (rich adds them when FORCE_COLOR is set)."""
    return _ANSI.sub("", text)


def _invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _assert_one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = _plain(result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0
    assert _plain(result.stdout).strip() == f"ragrec {ragrec.__version__}"


def test_no_arguments_shows_help() -> None:
    result = _invoke()
    assert "eval" in result.output
    assert "data" in result.output


def test_data_stats_json(ml_small_path: Path) -> None:
    result = _invoke("data", "stats", str(ml_small_path), "--protocol", "llamarec", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(_plain(result.stdout))
    assert report["protocol"] == "llamarec"
    assert report["layout"] == "latest"
    steps = {s["name"]: s for s in report["steps"]}
    core = steps["5-core (iterative)"]
    assert (core["users"], core["items"], core["interactions"]) == (610, 3650, 90274)
    assert steps["test targets"]["interactions"] == 610
    assert steps["loaded"]["interactions"] == 100836


def test_data_stats_table(ml_small_path: Path) -> None:
    result = _invoke("data", "stats", str(ml_small_path))
    assert result.exit_code == 0, result.output
    assert "90,274" in result.stdout
    assert "3,650" in result.stdout


def test_eval_writes_a_report(ml_small_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke(
        "eval",
        "--data",
        str(ml_small_path),
        "--protocol",
        "llamarec",
        "--ranker",
        "popularity",
        "--split",
        "test",
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["users"] == 610
    assert (summary["protocol"], summary["ranker"], summary["split"]) == (
        "llamarec",
        "popularity",
        "test",
    )
    assert summary["dataset"] == ml_small_path.name
    assert summary["environment"]["seed"] == 0
    assert len((out / "users.jsonl").read_text(encoding="utf-8").splitlines()) == 610
    assert "ndcg@10" in result.stdout
    assert "summary.json" in result.stdout


def test_eval_options_override_the_config_file(ml_small_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "ragrec.toml"
    config.write_text(
        f'[data]\npath = "{ml_small_path.as_posix()}"\n\n'
        '[eval]\nranker = "popularity"\nsplit = "test"\nseed = 1\n',
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = _invoke(
        "eval",
        "--config",
        str(config),
        "--ranker",
        "random",
        "--split",
        "validation",
        "--metrics",
        "ndcg@10,recall@20",
        "--limit-users",
        "20",
        "--seed",
        "9",
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["ranker"], summary["split"], summary["users"]) == ("random", "validation", 20)
    assert list(summary["metrics"]) == ["ndcg@10", "recall@20"]
    assert summary["environment"]["seed"] == 9
    assert summary["config"] == {"seed": 9}  # the random ranker gets the run's seed


def test_eval_nonexistent_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    result = _invoke("eval", "--data", str(missing), "--out", str(tmp_path / "o"), "--no-progress")
    _assert_one_line_error(result, "no-such-folder", "not a folder")
    assert not (tmp_path / "o").exists()


def test_eval_unknown_ranker(ml_small_path: Path, tmp_path: Path) -> None:
    result = _invoke(
        "eval",
        "--data",
        str(ml_small_path),
        "--ranker",
        "gru4rec",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    )
    _assert_one_line_error(result, "'gru4rec'", "popularity")


def test_eval_config_typo(tmp_path: Path) -> None:
    config = tmp_path / "ragrec.toml"
    config.write_text('[eval]\nrankr = "random"\n', encoding="utf-8")
    result = _invoke("eval", "--config", str(config), "--out", str(tmp_path / "o"))
    _assert_one_line_error(result, "ragrec.toml", "'eval.rankr'")


def test_eval_ranker_config_typo(ml_small_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "ragrec.toml"
    config.write_text("[eval.ranker_config]\nwindw_days = 3\n", encoding="utf-8")
    result = _invoke(
        "eval", "--config", str(config), "--data", str(ml_small_path), "--out", str(tmp_path)
    )
    _assert_one_line_error(result, "'windw_days'")


def test_eval_invalid_split(tmp_path: Path) -> None:
    result = _invoke("eval", "--split", "tst", "--out", str(tmp_path))
    _assert_one_line_error(result, "eval.split='tst'")


def test_error_text_is_not_taken_as_markup(tmp_path: Path) -> None:
    config = tmp_path / "ragrec.toml"
    config.write_text("eval = 3\n", encoding="utf-8")
    result = _invoke("eval", "--config", str(config), "--split", "test", "--out", str(tmp_path))
    _assert_one_line_error(result, "[eval] must be a table")


def test_config_show() -> None:
    result = _invoke("config", "show")
    assert result.exit_code == 0, result.output
    assert "[eval]" in result.stdout
    assert 'ranker = "popularity"' in result.stdout
    assert "[data]" in result.stdout


def test_config_show_merges_the_file(tmp_path: Path) -> None:
    config = tmp_path / "ragrec.toml"
    config.write_text('[eval]\nranker = "random"\n', encoding="utf-8")
    result = _invoke("config", "show", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert 'ranker = "random"' in result.stdout
    assert 'split = "test"' in result.stdout
    shown = _invoke("config", "show", "--config", str(config), "--json")
    assert json.loads(_plain(shown.stdout))["eval"]["ranker"] == "random"


def test_config_show_missing_file(tmp_path: Path) -> None:
    result = _invoke("config", "show", "--config", str(tmp_path / "nope.toml"))
    _assert_one_line_error(result, "nope.toml", "not found")


def test_installed_script_reports_bad_input_on_one_line(
    ml_small_path: Path, tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "ragrec"
    if not script.is_file():
        pytest.skip(f"the ragrec script is not installed beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    typo = tmp_path / "typo.toml"
    typo.write_text('[eval]\nrankr = "random"\n', encoding="utf-8")
    out = str(tmp_path / "o")
    cases = [
        (["eval", "--data", str(tmp_path / "missing"), "--out", out], "not a folder"),
        (["eval", "--data", str(ml_small_path), "--ranker", "nope", "--out", out], "'nope'"),
        (["eval", "--config", str(typo), "--out", out], "'eval.rankr'"),
    ]
    for args, needle in cases:
        proc = subprocess.run(
            [str(script), *args, "--no-progress"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error:")
        assert needle in lines[0]
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert version.stdout.strip() == f"ragrec {ragrec.__version__}"
