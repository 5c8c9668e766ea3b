"""``ragrec chat``: the turn logic (:class:`ChatSession`, free of I/O) and the two loops
that drive it (interactive with prompt_toolkit, or JSON lines); the replies are rendered
for people by :func:`ragrec.cli._render.render`."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.console import Console

from ragrec.cli._render import render
from ragrec.errors import ConfigError, RagrecError

if TYPE_CHECKING:
    from ragrec import Recommendation, RecommendedItem, Recommender

__all__ = [
    "COMMANDS",
    "ChatError",
    "ChatSession",
    "Command",
    "Reply",
    "coerce_user_id",
    "parse_user_id",
    "run_interactive",
    "run_script",
]

ReplyType = Literal[
    "recommendations",
    "feedback",
    "history",
    "weights",
    "why",
    "forgot",
    "user",
    "error",
    "help",
    "quit",
]
CommandName = Literal[
    "request",
    "repeat",
    "like",
    "dislike",
    "why",
    "history",
    "weights",
    "forget",
    "user",
    "help",
    "quit",
]

COMMANDS: tuple[tuple[str, str], ...] = (
    ("TEXT", "ask for recommendations, e.g. 'something like Alien but funnier'"),
    ("(empty line)", "repeat the last request"),
    ("/like N", "like item N of the last list"),
    ("/dislike N", "dislike item N (it is not recommended to you again)"),
    ("/why N", "the explanation and provenance of item N"),
    ("/history", "your history (built data, then what you liked)"),
    ("/weights", "your retrieval channel weights and the global prior"),
    ("/forget", "delete everything held about you"),
    ("/user ID", "switch to another user (a new id starts cold)"),
    ("/help", "this list"),
    ("/quit", "leave (also Ctrl-D)"),
)
_ALIASES: Mapping[str, CommandName] = {
    "like": "like",
    "dislike": "dislike",
    "why": "why",
    "history": "history",
    "weights": "weights",
    "forget": "forget",
    "user": "user",
    "help": "help",
    "h": "help",
    "?": "help",
    "quit": "quit",
    "q": "quit",
    "exit": "quit",
}
_NEEDS_NUMBER = frozenset({"like", "dislike", "why"})


class ChatError(RagrecError):
    """A chat turn that cannot be carried out (unknown command, bad item number)."""


@dataclass(frozen=True)
class Command:
    """One parsed input line.

    Attributes:
        name: What to do.
        arg: The rest of the line (request text, item number, user id).
    """

    name: CommandName
    arg: str = ""


@dataclass(frozen=True)
class Reply:
    """The outcome of one turn.

    Attributes:
        type: What kind of outcome it is (``"recommendations"``, ``"error"``, ...).
        data: JSON-ready fields of the outcome.
    """

    type: ReplyType
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., **data}``, JSON-ready."""
        return {"type": self.type, **_plain(dict(self.data))}

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


def coerce_user_id(text: str, *, integer: bool) -> int | str:
    """A user id typed as text: an int where the store's user ids are integers.

    Raises:
        ConfigError: Empty, or not a number where integers are needed.
    """
    value = text.strip()
    if not value:
        raise ConfigError("user id is empty; pass the id of an existing or a new user")
    if not integer:
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"user {value!r} is not a valid id for this store: its user ids are integers; "
            "pass a number"
        ) from None


def parse_user_id(recommender: Recommender, text: str) -> int | str:
    """A user id typed as text, converted to the type of the store's user ids.

    Raises:
        ConfigError: Empty, or not a number where the store's user ids are integers.
    """
    return coerce_user_id(text, integer=recommender.interactions.user_ids.dtype.kind in "iu")


def parse(line: str) -> Command:
    """Read one input line as a command.

    Raises:
        ChatError: An unknown ``/command`` or a missing argument.
    """
    text = line.strip()
    if not text:
        return Command("repeat")
    if not text.startswith("/"):
        return Command("request", text)
    word, _, arg = text[1:].partition(" ")
    name = _ALIASES.get(word.lower())
    if name is None:
        raise ChatError(f"unknown command '/{word}'; type /help for the commands")
    arg = arg.strip()
    if name in _NEEDS_NUMBER and not arg:
        raise ChatError(f"/{name} needs an item number from the last list, e.g. /{name} 1")
    if name == "user" and not arg:
        raise ChatError("/user needs a user id, e.g. /user 1")
    return Command(name, arg)


class ChatSession:
    """The turns of a chat with a :class:`~ragrec.Recommender`, without any I/O.

    Each input line goes through :meth:`handle` (or :func:`parse` then :meth:`run`) and
    comes back as a :class:`Reply`; errors become ``"error"`` replies, so a session goes
    on after a bad turn.

    Args:
        recommender: The recommender (a loaded store).
        user: The user to start with (None: the first turn must be ``/user ID``).
        k: Items per list.
        explain: Ask for explanations (of the top ``explain_top`` items).
    """

    def __init__(
        self,
        recommender: Recommender,
        *,
        user: int | str | None = None,
        k: int = 5,
        explain: bool = True,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        self.recommender = recommender
        self.user = user
        self.k = k
        self.explain = explain
        self._noted: str | None = None
        self.last: Recommendation | None = None
        self._last_request = ""
        self._reactions: list[dict[str, Any]] = []

    # turns --------------------------------------------------------------------------------

    def handle(self, line: str) -> Reply:
        """Carry out one input line."""
        try:
            return self.run(parse(line))
        except RagrecError as exc:
            return Reply("error", {"message": str(exc), "input": line.strip()})

    def run(self, command: Command) -> Reply:
        """Carry out a parsed command.

        Raises:
            RagrecError: The command cannot be carried out (:meth:`handle` turns this into
                an ``"error"`` reply).
        """
        name, arg = command.name, command.arg
        if name == "help":
            return Reply("help", {"commands": [{"usage": u, "help": h} for u, h in COMMANDS]})
        if name == "quit":
            return Reply("quit")
        if name == "user":
            return self.switch_user(arg)
        user = self._require_user()
        if name == "request":
            return self.request(arg)
        if name == "repeat":
            return self.request(self._last_request)
        if name in ("like", "dislike"):
            return self.react(name, arg)
        if name == "why":
            return self.why(arg)
        if name == "history":
            items = self.recommender.history(user)
            rows = [{"item_id": i, "title": t} for i, t in items]
            return Reply("history", {"user": user, "count": len(rows), "items": rows})
        if name == "weights":
            return Reply(
                "weights",
                {
                    "user": user,
                    "weights": self.recommender.weights(user),
                    "prior": self.recommender.weights(None),
                },
            )
        if name == "forget":
            removed = self.recommender.forget_user(user)
            self._reset()
            return Reply("forgot", {"user": user, "removed": removed})
        raise ChatError(f"command {name!r} is not handled")  # pragma: no cover - exhaustive

    def request(self, text: str) -> Reply:
        """Recommend for a free-text request ("" for none)."""
        user = self._require_user()
        previous = self.last
        rec = self.recommender.recommend(user, k=self.k, query=text or None, explain=self.explain)
        self.last, self._last_request = rec, text
        data: dict[str, Any] = rec.to_dict()
        if rec.llm_note and rec.llm_note == self._noted:
            data["llm_note"] = None  # said once per session
        self._noted = rec.llm_note or self._noted
        changes = self._changes(previous, rec)
        if changes:
            data["changes"] = changes
        self._reactions = []
        return Reply("recommendations", data)

    def react(self, kind: Literal["like", "dislike"], number: str) -> Reply:
        """Send a like or dislike for item ``number`` of the last list."""
        user = self._require_user()
        rec, n, item = self._item(number)
        before = self.recommender.weights(user)
        result = self.recommender.feedback(
            {
                "user_id": user,
                "item_id": item.item_id,
                "kind": kind,
                "rec_id": rec.id,
            }
        )
        after = dict(result.weights)
        data: dict[str, Any] = {
            "kind": kind,
            "n": n,
            "item_id": item.item_id,
            "title": item.title,
            "stored": result.stored,
            "reward": result.reward,
            "weights": after,
            "weight_changes": _weight_changes(before, after),
            "exemplar": result.exemplar,
        }
        if kind == "like":
            data["in_history"] = any(i == item.item_id for i, _ in self.recommender.history(user))
        self._reactions.append({"kind": kind, "item_id": item.item_id, "title": item.title})
        return Reply("feedback", data)

    def why(self, number: str) -> Reply:
        """The explanation and provenance of item ``number`` of the last list."""
        rec, n, item = self._item(number)
        as_dict = rec.to_dict()["items"][n - 1]
        return Reply(
            "why",
            {
                "n": n,
                "rec_id": rec.id,
                "item": as_dict,
                "channel_weights": dict(rec.weights),
                "llm_ranked": rec.llm_ranked,
                "prompt_id": rec.prompt_id,
                "prompt_hash": rec.prompt_hash,
                "model": f"{rec.backend}:{rec.model}",
                "degraded": rec.degraded,
                "reason": rec.reason,
                "explained": item.explanation is not None,
                "note": self._explain_note(rec, item),
            },
        )

    def switch_user(self, text: str) -> Reply:
        """Make another user the current one."""
        user = parse_user_id(self.recommender, text)
        self.user = user
        self._reset()
        history = self.recommender.history(user)
        return Reply("user", {"user": user, "known": bool(history), "history": len(history)})

    # helpers ------------------------------------------------------------------------------

    def _require_user(self) -> int | str:
        if self.user is None:
            raise ChatError("no user chosen yet; start with /user ID (or pass --user)")
        return self.user

    def _reset(self) -> None:
        self.last, self._last_request, self._reactions = None, "", []

    def _item(self, number: str) -> tuple[Recommendation, int, RecommendedItem]:
        """The last list, and item ``number`` of it."""
        rec = self.last
        if rec is None:
            raise ChatError("no recommendations yet; type a request first")
        try:
            n = int(number)
        except ValueError:
            raise ChatError(
                f"{number!r} is not an item number; use 1 to {len(rec.items)}"
            ) from None
        if not 1 <= n <= len(rec.items):
            raise ChatError(
                f"there is no item {n}: the last list has {len(rec.items)} items "
                f"(1 to {len(rec.items)})"
            )
        return rec, n, rec.items[n - 1]

    def _changes(self, previous: Recommendation | None, rec: Recommendation) -> dict[str, Any]:
        """What the reactions since the previous list changed."""
        if previous is None or not self._reactions:
            return {}
        return {
            "reactions": list(self._reactions),
            "weights": _weight_changes(previous.weights, rec.weights),
        }

    def _explain_note(self, rec: Recommendation, item: RecommendedItem) -> str:
        exp = item.explanation
        if exp is None:
            return "explanations are off (--no-explain)"
        if exp.source == "llm":
            return "worded by the LLM from the evidence below (checked: it names no other title)"
        if exp.rejected:
            return f"built from the evidence below; the LLM's wording was not used: {exp.rejected}"
        return "built from the evidence below"


def _weight_changes(
    before: Mapping[str, float], after: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    out = {}
    for name in dict.fromkeys([*before, *after]):
        b, a = float(before.get(name, 0.0)), float(after.get(name, 0.0))
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            out[name] = {"before": b, "after": a, "change": a - b}
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, tuples to lists, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# loops --------------------------------------------------------------------------------------


def run_script(
    session: ChatSession,
    lines: Iterable[str],
    write: Callable[[str], None],
    *,
    busy: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> None:
    """Read turns line by line, write one JSON object per turn, until ``/quit`` or the end.

    Args:
        session: The turns.
        lines: Input lines.
        write: Takes each JSON line (without a newline).
        busy: Shows a spinner with a message while a turn runs.
    """
    for line in lines:
        with busy("working") if busy is not None else contextlib.nullcontext():
            reply = session.handle(line.rstrip("\r\n"))
        if reply.type == "quit":
            return
        write(reply.to_json())


def run_interactive(
    session: ChatSession,
    console: Console,
    *,
    busy: Callable[[str], AbstractContextManager[Any]],
) -> None:
    """The terminal chat: a prompt_toolkit prompt, rich output, until ``/quit`` or Ctrl-D.

    Args:
        session: The turns.
        console: Where replies are printed.
        busy: Shows a spinner with a message while a turn runs (models may be loading).
    """
    from prompt_toolkit import PromptSession

    prompt: PromptSession[str] = PromptSession()
    console.print("[dim]Type a request, or /help for the commands; /quit or Ctrl-D leaves.[/]")
    while session.user is None:
        try:
            text = prompt.prompt("user id (an existing one, or a new id): ")
        except (EOFError, KeyboardInterrupt):
            return
        with busy("opening the user"):
            reply = session.handle(f"/user {text}")
        render(reply, console)
    while True:
        try:
            line = prompt.prompt(f"{session.user}> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        try:
            command = parse(line)
        except ChatError as exc:
            render(Reply("error", {"message": str(exc)}), console)
            continue
        if command.name == "quit":
            return
        if command.name == "forget":
            try:
                answer = prompt.prompt(f"delete everything held about user {session.user}? [y/N] ")
            except (EOFError, KeyboardInterrupt):
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                console.print("kept")
                continue
        message = "thinking" if command.name in ("request", "repeat") else "working"
        try:
            with busy(message):
                reply = session.run(command)
        except RagrecError as exc:
            reply = Reply("error", {"message": str(exc)})
        except KeyboardInterrupt:
            console.print("cancelled")
            continue
        render(reply, console)
