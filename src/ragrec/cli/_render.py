"""Rich rendering for people: the replies of a ``ragrec chat`` turn, and the table of a
``ragrec recommend``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ragrec import Recommendation
    from ragrec.cli._chat import Reply

__all__ = ["recommendation_table", "render"]


def _channels_text(channels: Iterable[Any]) -> str:
    return " · ".join(f"{c[0]} #{c[1]}" for c in channels)


def render(reply: Reply, console: Console) -> None:
    """Print a reply for people."""
    data = reply.to_dict()
    kind = reply.type
    if kind == "recommendations":
        _render_recommendations(data, console)
    elif kind == "feedback":
        verb = "liked" if data["kind"] == "like" else "disliked"
        note = ""
        if data.get("in_history"):
            note = " (now in your history)"
        elif data["kind"] == "dislike":
            note = " (not recommended to you again)"
        if not data.get("stored", True):
            note += " (already recorded)"
        console.print(f"[green]{verb}[/] {data['n']}. {escape(data['title'])}{note}")
        _render_weight_changes(data["weight_changes"], console, lead="weights: ")
    elif kind == "history":
        items = data["items"]
        shown = items[-15:]
        console.print(f"history of user {escape(str(data['user']))}: {data['count']} items")
        if len(items) > len(shown):
            console.print(f"  [dim]... {len(items) - len(shown)} older items[/]")
        for row in shown:
            console.print(f"  {escape(str(row['title']))} [dim]({row['item_id']})[/]")
    elif kind == "weights":
        table = Table(title=f"channel weights of user {escape(str(data['user']))}", box=None)
        table.add_column("channel")
        table.add_column("yours", justify="right")
        table.add_column("prior", justify="right")
        for name, value in data["weights"].items():
            prior = data["prior"].get(name)
            table.add_row(name, f"{value:.3f}", "" if prior is None else f"{prior:.3f}")
        console.print(table)
    elif kind == "why":
        _render_why(data, console)
    elif kind == "forgot":
        removed = ", ".join(f"{k} {v}" for k, v in data["removed"].items() if v)
        console.print(
            f"forgot user {escape(str(data['user']))}: {escape(removed or 'nothing was held')}"
        )
    elif kind == "user":
        state = f"{data['history']} items in history" if data["known"] else "new user, cold start"
        console.print(f"user {escape(str(data['user']))} ({state})")
    elif kind == "error":
        console.print(f"[bold red]error:[/] {escape(data['message'])}", soft_wrap=True)
    elif kind == "help":
        table = Table(box=None, show_header=False)
        for row in data["commands"]:
            table.add_row(f"[bold]{escape(row['usage'])}[/]", escape(row["help"]))
        console.print(table)


def _render_weight_changes(changes: Mapping[str, Any], console: Console, *, lead: str) -> None:
    if not changes:
        console.print(f"  [dim]{lead}unchanged[/]")
        return
    parts = [
        f"{name} {c['before']:.3f} → {c['after']:.3f} ({c['change']:+.3f})"
        for name, c in changes.items()
    ]
    console.print(f"  [dim]{lead}[/]" + ", ".join(parts))


def _render_recommendations(data: Mapping[str, Any], console: Console) -> None:
    changes = data.get("changes")
    if changes:
        done = "; ".join(
            f"{'liked' if r['kind'] == 'like' else 'disliked'} {escape(str(r['title']))}"
            for r in changes["reactions"]
        )
        console.print(f"[dim]since the last list you {done}[/]")
        _render_weight_changes(changes["weights"], console, lead="channel weights: ")
    head = [f"user {escape(str(data['user_id']))}"]
    if data.get("query"):
        head.append(f"“{escape(data['query'])}”")
    if data.get("cold_start"):
        head.append("[yellow]cold start[/] (no history: popular and matching items)")
    if data.get("degraded"):
        head.append(f"[yellow]degraded[/]: {escape(str(data.get('reason')))}")
    console.print(" · ".join(head), soft_wrap=True)
    if not data["items"]:
        console.print("  [dim]nothing to recommend[/]")
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("#", justify="right", style="bold")
    table.add_column("title", ratio=1)
    table.add_column("score", justify="right")
    table.add_column("from", style="dim")
    for item in data["items"]:
        title = escape(str(item["title"]))
        exp = item.get("explanation")
        if exp and exp.get("text"):
            title += f"\n[italic]{escape(exp['text'])}[/]"
        table.add_row(
            f"{item['rank']}.",
            title,
            f"{item['score']:.3f}" if item["score"] is not None else "",
            _channels_text(item["channels"]),
        )
    console.print(table)
    if data.get("llm_note"):
        console.print(f"[dim]{escape(data['llm_note'])}[/]", soft_wrap=True)


def _render_why(data: Mapping[str, Any], console: Console) -> None:
    item = data["item"]
    console.print(f"[bold]{data['n']}. {escape(str(item['title']))}[/] [dim]({item['item_id']})[/]")
    exp = item.get("explanation")
    if exp:
        console.print(f"  why: {escape(str(exp['text']))}")
    if data.get("note"):
        console.print(f"  [dim]{escape(data['note'])}[/]")
    evidence = exp.get("evidence") if exp else None
    if evidence:
        for share in evidence["channels"]:
            console.print(f"  evidence: {share['channel']} {share['share']:.0%} of the score")
        for h in evidence["history"]:
            console.print(
                f"  evidence: your {escape(str(h['title']))} adds {h['share']:.0%} "
                f"(via {', '.join(h['channels'])})"
            )
        facts = [*evidence.get("genres", ())]
        if evidence.get("decade"):
            facts.append(evidence["decade"])
        if facts:
            console.print(f"  evidence: shares {escape(', '.join(facts))} with your history")
    lp = item.get("llm_logprob")
    console.print(
        f"  score {item['score']:.3f} = retrieval {item['retrieval_score']:.3f}"
        + (f", LLM log-prob {lp:.3f} (label {item['label']})" if lp is not None else "")
        + ("" if data["llm_ranked"] else " [dim](LLM did not reorder)[/]")
    )
    weights = data["channel_weights"]
    for channel, rank, score in item["channels"]:
        weight = weights.get(channel)
        w = f", weight {weight:.3f}" if weight is not None else ""
        console.print(f"  proposed by {channel}: rank {rank}, score {score:.3f}{w}")
    console.print(
        f"  [dim]model {escape(data['model'])}, prompt {data['prompt_id']} "
        f"{(data['prompt_hash'] or '')[:12]}, rec {data['rec_id']}[/]"
    )


def recommendation_table(rec: Recommendation) -> Table:
    """The items of a recommendation as a table (``ragrec recommend``)."""
    notes = [f"user {rec.user_id}"]
    if rec.query:
        notes.append(f"query {rec.query!r}")
    if rec.cold_start:
        notes.append("cold start: no history, popular and matching items")
    if rec.degraded:
        notes.append(f"degraded: {rec.reason}")
    explained = any(item.explanation is not None for item in rec.items)
    caption = f"recommendation {rec.id} ({rec.timings.get('total', 0.0):.2f} s)"
    if explained:
        n_llm = sum(1 for it in rec.items if it.explanation and it.explanation.source == "llm")
        caption += f"; explanations: {n_llm} written by the LLM, the rest from the evidence"
    table = Table(title=escape(" | ".join(notes)), caption=escape(caption))
    table.add_column("#", justify="right")
    table.add_column("title", ratio=2)
    table.add_column("score", justify="right")
    table.add_column("channels (rank)", ratio=1)
    if explained:
        table.add_column("explanation", ratio=3)
    for item in rec.items:
        row = [
            str(item.rank),
            escape(item.title),
            f"{item.score:.3f}",
            escape(" ".join(f"{c}:{r}" for c, r, _ in item.channels)),
        ]
        if explained:
            row.append(escape(item.explanation.text) if item.explanation else "")
        table.add_row(*row)
    return table
