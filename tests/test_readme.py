"""The README's Python example runs as written and prints what it says."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# Slow: the examples build a full ml-latest-small store with every default channel,
# forget a user (every channel is fit again) and fit a retriever again: three SASRec fits,
# about 35 minutes on 2 cores. Run it with -m slow before changing the README's examples.
@pytest.mark.slow
def test_readme_python_example_runs(ml_small_path: Path, tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no Python example"
    here = Path.cwd()
    # The examples use ../shared/data/... from the repository root and write runs/...:
    # run them in a scratch "repository" beside a link to the real shared folder.
    (tmp_path / "repo").mkdir()
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    os.chdir(tmp_path / "repo")
    namespace: dict[str, object] = {}  # blocks build on each other, as in a session
    try:
        for block in blocks:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(block, "README.md", "exec"), namespace)
            for shown in re.findall(r"# \{'ndcg@10': ([0-9.]+)", block):
                assert shown.rstrip(".") in printed.getvalue()
    finally:
        os.chdir(here)
