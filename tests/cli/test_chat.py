"""``ragrec chat``: the turn logic in-process, a scripted JSON-lines session over stdin,
and the interactive prompt through a pseudo-terminal; one real store (300 movies of
ml-latest-small) built per module, explanations off."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragrec import Recommender
from ragrec.cli._chat import ChatError, ChatSession, Command, parse

CONFIG = {"generator": {"threads": 1}, "explain_top": 1}
SCRIPT = Path(sys.executable).parent / "ragrec"
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


@pytest.fixture(scope="module")
def built(ml_small: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Recommender, Path]:
    """A recommender on the first 300 movies and their ratings, built once in-process,
    and a pristine copy of its store for the subprocess tests."""
    catalog = ml_small.catalog.subset(np.arange(300))
    interactions = ml_small.interactions.restrict_items(catalog)
    root = tmp_path_factory.mktemp("chat")
    rec = Recommender.build(catalog, interactions, CONFIG, path=root / "in-process")
    shutil.copytree(root / "in-process", root / "pristine")
    return rec, root / "pristine"


@pytest.fixture(scope="module")
def recommender(built: tuple[Recommender, Path]) -> Recommender:
    return built[0]


@pytest.fixture(scope="module")
def store(built: tuple[Recommender, Path]) -> Path:
    """A store folder that only the subprocess tests use (each on its own copy)."""
    return built[1]


def _store_copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    return copy


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _require_script() -> None:
    if not SCRIPT.is_file():
        pytest.skip(f"the ragrec script is not installed beside {sys.executable}")


# the turn logic, in-process ---------------------------------------------------------------


def test_parse() -> None:
    assert parse("alien movies") == Command("request", "alien movies")
    assert parse("   ") == Command("repeat")
    assert parse("/like 3") == Command("like", "3")
    assert parse("/WHY  2 ") == Command("why", "2")
    assert parse("/q") == Command("quit")
    assert parse("/user 42") == Command("user", "42")
    for bad, needle in [("/likes 1", "unknown command"), ("/like", "item number"), ("/user", "id")]:
        with pytest.raises(ChatError, match=needle):
            parse(bad)


def test_turn_errors_do_not_end_the_session(recommender: Recommender) -> None:
    session = ChatSession(recommender, k=3, explain=False)
    assert session.handle("hello").data["message"].startswith("no user chosen")
    assert session.handle("/user bob").type == "error"  # the store's user ids are integers
    assert session.handle("/user 2").to_dict() == {
        "type": "user",
        "user": 2,
        "known": True,
        "history": len(recommender.history(2)),
    }
    assert "no recommendations yet" in session.handle("/like 1").data["message"]
    assert session.handle("/help").type == "help"
    assert session.handle("/quit").type == "quit"


def test_repeat_like_dislike_and_why(recommender: Recommender) -> None:
    session = ChatSession(recommender, user=3, k=4, explain=False)
    first = session.handle("space adventure")
    assert first.type == "recommendations"
    assert first.data["query"] == "space adventure"
    assert "changes" not in first.data
    liked = session.handle("/like 1")
    assert liked.type == "feedback"
    assert liked.data["in_history"] is True
    assert liked.data["weight_changes"]
    disliked_id = first.data["items"][1]["item_id"]
    assert session.handle("/dislike 2").data["item_id"] == disliked_id
    again = session.handle("")  # repeats the last request
    assert again.type == "recommendations"
    assert again.data["query"] == "space adventure"
    assert [r["kind"] for r in again.data["changes"]["reactions"]] == ["like", "dislike"]
    assert again.data["changes"]["weights"]
    shown = {i["item_id"] for i in again.data["items"]}
    assert disliked_id not in shown
    assert first.data["items"][0]["item_id"] not in shown  # now history, not recommended
    why = session.handle("/why 1").to_dict()
    assert why["item"]["item_id"] == again.data["items"][0]["item_id"]
    assert why["note"] == "explanations are off (--no-explain)"
    assert why["channel_weights"] == again.data["weights"]
    json.dumps(why)  # JSON-ready
    assert "no item 9" in session.handle("/why 9").data["message"]
    assert "not an item number" in session.handle("/like x").data["message"]


def test_why_shows_the_explanation_and_its_evidence(recommender: Recommender) -> None:
    """Every item of a list carries its explanation; /why N prints it with the evidence
    it came from; the line saying the LLM ranking is off comes once per session."""
    from rich.console import Console

    from ragrec.cli._render import render

    saved = recommender.config
    recommender.config = saved.model_copy(
        update={"explain": saved.explain.model_copy(update={"rewrite": False})}
    )
    try:
        session = ChatSession(recommender, user=3, k=3, explain=True)
        first = session.handle("")
        assert all(i["explanation"]["text"] for i in first.data["items"])
        assert first.data["llm_note"].startswith("LLM ranking off: blend weight 0")
        again = session.handle("")
        assert again.data["llm_note"] is None  # said once
        why = session.handle("/why 1")
        exp = why.data["item"]["explanation"]
        assert why.data["explained"] is True
        assert why.data["note"].startswith("built from the evidence below")
        assert exp["evidence"]["channels"]
        console = Console(record=True, width=200)
        render(first, console)
        render(why, console)
        text = console.export_text()
        for item in first.data["items"]:
            assert item["explanation"]["text"] in " ".join(text.split())
        assert "dropped" not in text
        assert text.count("LLM ranking off") == 1
        assert "evidence: " in text
        assert f"why: {exp['text']}" in " ".join(text.split())
    finally:
        recommender.config = saved


def test_forget_a_new_user(recommender: Recommender) -> None:
    session = ChatSession(recommender, user=777001, k=3, explain=False)
    cold = session.handle("")
    assert cold.data["cold_start"] is True
    session.handle("/like 1")
    assert session.handle("/history").data["count"] == 1
    forgot = session.handle("/forget")
    assert forgot.type == "forgot"
    assert forgot.data["removed"]["events"] == 1
    assert session.handle("/history").data["count"] == 0
    assert "no recommendations yet" in session.handle("/like 1").data["message"]


# the command, through stdin and a pseudo-terminal ----------------------------------------


def test_scripted_session_prints_json_lines(store: Path, tmp_path: Path) -> None:
    _require_script()
    turns = "alien movies\n/like 1\n/history\n/weights\n/why 1\n/like 99\n/quit\nnot read\n"
    proc = subprocess.run(
        [str(SCRIPT), "chat", str(_store_copy(store, tmp_path)), "--user", "1", "--no-explain"],
        input=turns,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    types = [r["type"] for r in replies]
    assert types == ["recommendations", "feedback", "history", "weights", "why", "error"]
    recs, feedback, history, weights, why, error = replies
    assert recs["user_id"] == 1
    assert recs["query"] == "alien movies"
    assert len(recs["items"]) == 5
    assert not recs["cold_start"]
    liked = recs["items"][0]["item_id"]
    assert feedback["item_id"] == liked
    assert feedback["kind"] == "like"
    assert feedback["in_history"] is True
    assert history["items"][-1]["item_id"] == liked
    assert history["count"] == len(history["items"])
    changes = feedback["weight_changes"]
    assert changes
    assert all(c["before"] != c["after"] for c in changes.values())
    assert weights["weights"] == feedback["weights"]
    assert weights["weights"] != recs["weights"]
    assert why["item"]["item_id"] == liked
    assert {c[0] for c in why["item"]["channels"]} <= set(weights["weights"])
    assert "no item 99" in error["message"]
    assert error["input"] == "/like 99"


def test_bad_user_is_one_line_error(store: Path) -> None:
    _require_script()
    proc = subprocess.run(
        [str(SCRIPT), "chat", str(store), "--user", "alice"],
        input="",
        capture_output=True,
        text=True,
        env={**_env(), "NO_COLOR": "1"},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:")
    assert "'alice'" in lines[0]


class _Terminal:
    """A child process on a pseudo-terminal, read with a timeout."""

    def __init__(self, args: list[str]) -> None:
        import fcntl
        import pty
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        env = {**_env(), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master, self.raw = master, b""

    def text(self) -> str:
        return _ESCAPES.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def expect(self, pattern: str, timeout: float = 240) -> re.Match[str]:
        end = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            if time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} in:\n{self.text()[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited before {pattern!r}:\n{self.text()[-3000:]}")
                self.raw += chunk

    def send(self, line: str) -> None:
        self.raw = b""  # expect() looks only at what comes after this input
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        os.close(self.master)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_interactive_session_through_a_terminal(store: Path, tmp_path: Path) -> None:
    _require_script()
    term = _Terminal([str(SCRIPT), "chat", str(_store_copy(store, tmp_path)), "--no-explain"])
    try:
        term.expect(r"user id \(an existing one, or a new id\):")
        term.send("1")
        term.expect(r"user 1 \(\d+ items in history\)(.|\n)*\n1>")
        term.send("alien movies")
        listed = term.expect(r"“alien movies”\n((.|\n)*)\n1>")
        numbers = re.findall(r"^\s*(\d+)\.\s+\S", listed.group(1), flags=re.MULTILINE)
        assert numbers == ["1", "2", "3", "4", "5"]
        term.send("/like 1")
        term.expect(r"liked 1\. .*(.|\n)*weights: .*→(.|\n)*\n1>")
        term.send("/forget")
        term.expect(r"delete everything held about user 1\? \[y/N\]")
        term.send("n")
        term.expect(r"kept\n(.|\n)*1>")
        term.send("/quit")
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()
