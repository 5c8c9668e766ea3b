"""Tests for ``ragrec eval`` grids (--systems), ``eval compare`` and ``eval report``, and
the systems file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ragrec.cli import app
from ragrec.errors import ConfigError
from ragrec.eval import SystemSpec, expand_systems, load_grid

runner = CliRunner()

SYSTEMS = """
reference = "popularity"

[eval]
protocol = "llamarec"
split = "test"
metrics = ["ndcg@10", "recall@10", "ndcg@20"]
limit_users = 60

[[systems]]
name = "popularity"
ranker = "popularity"

[[systems]]
name = "random"
ranker = "random"
grid = { seed = [1, 2] }

[[published]]
name = "LlamaRec"
source = "LlamaRec paper, Table 1"
metrics = { "ndcg@10" = 0.0759, "recall@10" = 0.1524 }
"""


def _invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def grid_run(ml_small_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("grid")
    systems = folder / "systems.in.toml"
    systems.write_text(SYSTEMS, encoding="utf-8")
    result = _invoke(
        "eval",
        "--systems",
        str(systems),
        "--data",
        str(ml_small_path),
        "--out",
        str(folder / "out"),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    return folder / "out"


class TestGrid:
    def test_one_folder_per_system(self, grid_run: Path) -> None:
        names = sorted(p.name for p in grid_run.iterdir() if p.is_dir())
        assert names == ["popularity", "random[seed=1]", "random[seed=2]"]
        for name in names:
            summary = json.loads((grid_run / name / "summary.json").read_text())
            assert summary["system"] == name
            assert summary["users"] == 60
            assert set(summary["metrics"]) == {"ndcg@10", "recall@10", "ndcg@20"}
            assert (
                summary["environment"]["git_commit"] is None
                or len(summary["environment"]["git_commit"]) >= 40
            )
            assert (grid_run / name / "config.toml").exists()
        seeds = [
            json.loads((grid_run / f"random[seed={s}]" / "summary.json").read_text())["config"]
            for s in (1, 2)
        ]
        assert [c["seed"] for c in seeds] == [1, 2]

    def test_report_files(self, grid_run: Path) -> None:
        report = (grid_run / "report.md").read_text(encoding="utf-8")
        for name in ("popularity", "random[seed=1]", "LlamaRec", "0.0759"):
            assert name in report
        pngs = sorted(p.name for p in grid_run.glob("*.png"))
        assert len(pngs) >= 2
        for png in pngs:
            assert (grid_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (grid_run / "systems.toml").read_text(encoding="utf-8") == SYSTEMS
        assert "## Compared with popularity" in report

    def test_compare(self, grid_run: Path) -> None:
        result = _invoke(
            "eval",
            "compare",
            str(grid_run / "random[seed=1]"),
            str(grid_run / "popularity"),
            "--json",
            "--n-boot",
            "2000",
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        text = json.dumps(data)
        assert "ndcg@10" in text
        assert "recall@10" in text

    def test_compare_text(self, grid_run: Path) -> None:
        result = _invoke(
            "eval", "compare", str(grid_run / "popularity"), str(grid_run / "popularity")
        )
        assert result.exit_code == 0, result.output
        assert "ndcg@10" in result.stdout
        assert "+0.0000" in result.stdout

    def test_compare_missing_run(self, grid_run: Path, tmp_path: Path) -> None:
        line = _error(_invoke("eval", "compare", str(grid_run / "popularity"), str(tmp_path)))
        assert "summary.json" in line

    def test_report_rebuilds(self, grid_run: Path, tmp_path: Path) -> None:
        result = _invoke(
            "eval",
            "report",
            str(grid_run / "popularity"),
            str(grid_run / "random[seed=2]"),
            "--out",
            str(tmp_path / "r"),
            "--systems",
            str(grid_run / "systems.toml"),
        )
        assert result.exit_code == 0, result.output
        report = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
        assert "random[seed=2]" in report
        assert "LlamaRec" in report


class TestOptions:
    def test_resume_from_the_cli(self, ml_small_path: Path, tmp_path: Path) -> None:
        args = ["eval", "--data", str(ml_small_path), "--out", str(tmp_path), "--no-progress"]
        first = _invoke(*args, "--limit-users", "20")
        assert first.exit_code == 0, first.output
        again = _invoke(*args, "--limit-users", "30")
        assert again.exit_code == 0, again.output
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert (summary["users"], summary["resumed_users"]) == (30, 20)

    def test_bad_engine_option(self, ml_small_path: Path, tmp_path: Path) -> None:
        line = _error(
            _invoke(
                "eval",
                "--data",
                str(ml_small_path),
                "--out",
                str(tmp_path),
                "--engine",
                "ray",
                "--engine-option",
                "workers",
            )
        )
        assert "--engine-option 'workers' is not KEY=VALUE" in line

    def test_systems_and_config_exclusive(self, tmp_path: Path) -> None:
        systems = tmp_path / "s.toml"
        systems.write_text(SYSTEMS, encoding="utf-8")
        line = _error(_invoke("eval", "--systems", str(systems), "--config", str(systems)))
        assert "either --systems or --config" in line
        line = _error(_invoke("eval", "--systems", str(systems), "--ranker", "random"))
        assert "--ranker random does not apply with --systems" in line


class TestSystemsFile:
    def test_expand(self) -> None:
        spec = SystemSpec(
            name="llm",
            ranker="llm",
            config={"n_candidates": 20},
            grid={"exemplars.k": [0, 2], "explain_top": [0, 1]},
        )
        runs = expand_systems([spec])
        assert [r.name for r in runs] == [
            "llm[k=0,explain_top=0]",
            "llm[k=0,explain_top=1]",
            "llm[k=2,explain_top=0]",
            "llm[k=2,explain_top=1]",
        ]
        assert runs[3].config == {"n_candidates": 20, "exemplars": {"k": 2}, "explain_top": 1}

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ('[[systems]]\nname = "a"\nranker = "nope"\n', "'nope' is not known"),
            ('[[systems]]\nname = "a b"\nranker = "random"\n', "folder name"),
            ('[[systems]]\nname = "a"\nranker = "random"\ngrid = { seed = [] }\n', "no values"),
            ("[eval]\nsplit = 'test'\n", "systems"),
            (
                '[[systems]]\nname = "a"\nranker = "random"\n[[systems]]\nname = "a"\n'
                'ranker = "popularity"\n',
                "appears twice",
            ),
            ('[[systems]]\nname = "a"\nranker = "random"\ncolour = 1\n', "colour"),
            ('reference = "b"\n[[systems]]\nname = "a"\nranker = "random"\n', "'b' is not a"),
        ],
    )
    def test_bad_files(self, tmp_path: Path, text: str, needle: str) -> None:
        path = tmp_path / "systems.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=needle):
            load_grid(path)
