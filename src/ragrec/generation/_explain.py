"""Evidence-grounded explanations: every recommended item gets a sentence built from the
evidence retrieval carried for it (always valid), which the LLM may rewrite into one
fluent sentence; a rewrite is accepted only when every title it mentions is evidence
and it passes the checks, otherwise the evidence sentence stands."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from ragrec._settings import Settings
from ragrec.errors import RagrecError
from ragrec.generation._base import Generator
from ragrec.prompting import DEFAULT_EXPLAIN_TEMPLATE, Message, PromptTemplate, sanitize
from ragrec.retrieval import Evidence

logger = logging.getLogger(__name__)

__all__ = [
    "ExplainConfig",
    "ExplainItem",
    "Explainer",
    "ExplanationResult",
    "TitleIndex",
    "display_title",
    "evidence_sentence",
]

_WORD = re.compile(r"[^\W\d_]{2,}")
_YEAR = re.compile(r"\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
# Phrases a rewrite may copy from the prompt without saying anything.
_PLACEHOLDERS = frozenset({"a title from the history", "...", "one sentence", "facts"})


def _norm(text: str) -> str:
    return " ".join(text.lower().strip(" .!\"'").split())


def _title_key(title: str) -> str:
    """A title as it is matched in free text: no year, no leading article, lower case,
    words only ("The Matrix (1999)" -> "matrix")."""
    bare = _YEAR.sub("", title)
    # MovieLens writes "Matrix, The": the article after a comma
    bare = re.sub(r",\s*(the|a|an)$", "", bare.strip(), flags=re.IGNORECASE)
    words = [w.lower() for w in re.findall(r"[^\W_]+", bare)]
    if words and words[0] in {"the", "a", "an"}:
        words = words[1:]
    return " ".join(words)


_ARTICLE_LAST = re.compile(
    r"^(?P<name>.+?), (?P<article>The|A|An)(?P<alt> \([^()]*\))?"
    r"(?P<year> \(\d{4}(?:[-\u2013]\d{0,4})?\))?$"
)


def display_title(title: str) -> str:
    """A title as people write it: MovieLens's "Matrix, The (1999)" as "The Matrix
    (1999)" (also with an alternative title before the year); other titles unchanged."""
    text = sanitize(title)
    match = _ARTICLE_LAST.match(text)
    if match is None:
        return text
    return f"{match['article']} {match['name']}{match['alt'] or ''}{match['year'] or ''}"


class TitleIndex:
    """Finds which known titles a text mentions (for checking that an LLM's sentence
    cites no title outside the evidence).

    A title of two or more words matches as a word sequence (year and leading article
    ignored, case ignored). A one-word title matches only as a capitalised word of four
    or more letters that does not start a sentence (so "up" or "Heat waves" at the
    start of a sentence are not taken for titles). Quoted text (``"..."``) that is not a
    known title counts as an unknown title.

    Args:
        titles: Every title the text might mention (the catalog's).
    """

    def __init__(self, titles: Iterable[str]) -> None:
        self._multi: dict[str, str] = {}
        self._single: dict[str, str] = {}
        longest = 1
        for title in titles:
            key = _title_key(str(title))
            if not key:
                continue
            n = key.count(" ") + 1
            target = self._multi if n > 1 else self._single
            target.setdefault(key, str(title))
            longest = max(longest, n)
        self._longest = min(longest, 12)

    def __len__(self) -> int:
        return len(self._multi) + len(self._single)

    def mentions(self, text: str, *, allowed: Iterable[str] = ()) -> set[str]:
        """Title keys (see :func:`_title_key`) of the known titles ``text`` mentions
        outside the ``allowed`` titles' own words, and ``"?<quoted text>"`` for quoted
        text that is no known title.

        Multi-word titles match as word sequences; a one-word title only when its year
        follows it ("Heat (1995)") or it is quoted, since single words ("Up", "Heat",
        "Romance") are ordinary words too.
        """
        found: set[str] = set()
        words = [w.lower() for w in re.findall(r"[^\W_]+", text)]
        # the allowed titles' words are no mention of anything else ("Back to the Future
        # Part III" holds "Back to the Future")
        masked = list(words)
        for title in allowed:
            seq = _title_key(title).split()
            n = len(seq)
            for i in range(len(masked) - n + 1):
                if n and masked[i : i + n] == seq:
                    masked[i : i + n] = [""] * n
        for n in range(self._longest, 1, -1):
            for i in range(len(masked) - n + 1):
                window = masked[i : i + n]
                if "" in window:
                    continue
                key = " ".join(window)
                if key in self._multi:
                    found.add(key)
        for i, word in enumerate(masked[:-1]):
            if word and word in self._single and re.fullmatch(r"\d{4}", masked[i + 1] or ""):
                found.add(word)
        allowed_keys = {_title_key(t) for t in allowed}
        for quoted in _QUOTED.findall(text):
            key = _title_key(quoted)
            if key in allowed_keys:
                continue
            if key in self._single or key in self._multi:
                found.add(key)
            elif key:
                found.add(f"?{quoted.strip()}")
        return found


class ExplainConfig(Settings):
    """Configuration of :class:`Explainer`."""

    rewrite: bool = Field(
        default=True,
        description="Let the LLM rewrite the evidence sentence of the top items into one "
        "fluent sentence (checked; the evidence sentence stands when a rewrite fails). "
        "False: evidence sentences only, no LLM at all.",
    )
    max_tokens: int = Field(default=40, ge=8, description="Generated tokens per rewrite.")
    max_reason_chars: int = Field(default=220, ge=10, description="Longest rewrite accepted.")
    min_reason_words: int = Field(
        default=4,
        ge=1,
        description="Fewest words a rewrite may have (a bare title explains nothing).",
    )
    cite_items: int = Field(
        default=2, ge=1, description="Most history titles named in an evidence sentence."
    )
    cite_min_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of the item's score a history item needs to be named after the "
        "first (the one with the largest share is always named): items with small shares "
        "often do not lower the score when removed.",
    )
    genres: int = Field(default=3, ge=0, description="Shared genres named in a sentence.")
    history_verb: str = Field(
        default="watched",
        min_length=1,
        description="The verb for the user's history in sentences ('Because you watched "
        "X'); 'bought' or 'read' for other catalogs.",
    )


@dataclass(frozen=True)
class ExplainItem:
    """What the explainer needs of one recommended item.

    Attributes:
        item_id: Catalog id.
        title: Title.
        evidence: Why retrieval proposed it (None: no evidence, e.g. a candidate the
            retriever did not see).
    """

    item_id: Any
    title: str
    evidence: Evidence | None


@dataclass(frozen=True)
class ExplanationResult:
    """One item's explanation.

    Attributes:
        item_id: The recommended item.
        text: The sentence shown to the user (never empty).
        source: ``"llm"`` when the LLM's rewrite was accepted, else ``"template"``.
        template: The evidence sentence (always built; ``text`` when ``source`` is
            ``"template"``).
        cited: Ids of the history items the sentence names.
        evidence: The evidence it was built from.
        llm_text: The LLM's rewrite, accepted or not (None when none was asked for).
        rejected: Why a rewrite was not used: rejected by a check, the backend failed,
            or not asked for (beyond ``explain_top``, or rewrites off); None when
            ``source`` is ``"llm"``.
        tokens: Tokens the LLM generated for this item.
        seconds: Wall time for this item: its share of building the sentences, plus its
            share of the rewrite call when it was rewritten.
    """

    item_id: Any
    text: str
    source: Literal["template", "llm"]
    template: str
    cited: tuple[Any, ...]
    evidence: Evidence | None
    llm_text: str | None = None
    rejected: str | None = None
    tokens: int = 0
    seconds: float = 0.0


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def evidence_sentence(
    title: str,
    evidence: Evidence | None,
    config: ExplainConfig | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The deterministic explanation of one item from its evidence, and the ids of the
    history items it names. Always a valid sentence, whatever the evidence holds."""
    cfg = config or ExplainConfig()
    if evidence is None:
        return "Recommended from what you have interacted with.", ()
    cited = tuple(
        h
        for n, h in enumerate(evidence.history[: cfg.cite_items])
        if n == 0 or h.share >= cfg.cite_min_share
    )
    facts = [g.lower() for g in evidence.genres[: cfg.genres]]
    if evidence.decade and cited:
        facts.append(evidence.decade)
    parts = []
    if evidence.query:
        parts.append(f'Matches your request "{sanitize(evidence.query)}"')
    if cited:
        because = f"because you {cfg.history_verb} " + _join(
            [display_title(h.title) for h in cited]
        )
        parts.append(because[0].upper() + because[1:] if not parts else because)
    if parts:
        sentence = "; ".join(parts)
        if facts and cited:
            sentence += ": " + ", ".join(facts)
        return sentence + ".", tuple(h.item_id for h in cited)
    if evidence.popularity_rank is not None and evidence.main_channel == "popularity":
        return f"Popular with other users (#{evidence.popularity_rank} overall).", ()
    if evidence.channels:
        kind = evidence.channels[0].kind
        what = {
            "transition": f"what people {cfg.history_verb} after the same titles as you",
            "ease": f"what people with a history like yours {cfg.history_verb}",
            "semantic": "titles close to your history in content",
            "popularity": "what is popular with other users",
        }.get(kind, f"the {kind} channel")
        return f"Recommended from {what}.", ()
    return "Recommended from what you have interacted with.", ()


class Explainer:
    """Explains recommended items: the evidence sentence for every item, and, with a
    generator and ``rewrite`` on, the LLM's rewrite of it for the top items (all of a
    request's rewrites in one batched generate call), each checked before it is used.

    Args:
        generator: The LLM backend (None: evidence sentences only).
        config: Rewrite budget and checks.
        template: An explain template (``{item}``, ``{evidence}``, ``{query}``).
    """

    def __init__(
        self,
        generator: Generator | None = None,
        config: ExplainConfig | None = None,
        template: PromptTemplate | None = None,
    ) -> None:
        self.generator = generator
        self.config = config or ExplainConfig()
        self.template = template or DEFAULT_EXPLAIN_TEMPLATE

    def explain(
        self,
        items: Sequence[ExplainItem],
        *,
        rewrite: int = 0,
        titles: TitleIndex | None = None,
        query: str | None = None,
    ) -> list[ExplanationResult]:
        """Explain every item; the first ``rewrite`` of them are rewritten by the LLM
        (when a generator is set and ``config.rewrite`` is on). Never raises for bad
        model output or a failing backend: the evidence sentence stands, and
        ``rejected`` says why.

        Args:
            items: The recommended items, best first.
            rewrite: How many of the first items the LLM rewrites.
            titles: Every title the LLM might mention (the catalog's); without it, only
                the evidence's own titles are known and quoted unknown text is caught.
            query: The user's free-text request, if any.
        """
        start = time.perf_counter()
        base = [evidence_sentence(it.title, it.evidence, self.config) for it in items]
        n = min(rewrite, len(items)) if self.generator is not None and self.config.rewrite else 0
        off = (
            "rewrites off (explain.rewrite = false)"
            if not self.config.rewrite
            else "no LLM configured"
            if self.generator is None
            else "beyond explain_top"
        )
        texts: list[str | None] = [None] * len(items)
        tokens = [0] * len(items)
        failure: str | None = None
        t_llm = 0.0
        if n:
            t0 = time.perf_counter()
            asked = [self.prompt(it, base[i][0], query) for i, it in enumerate(items[:n])]
            try:
                assert self.generator is not None
                outputs = self.generator.generate(
                    [p for p, _ in asked], max_tokens=self.config.max_tokens, stop=["\n"]
                )
            except (RagrecError, RuntimeError, OSError, TimeoutError) as exc:
                logger.warning("explanation rewrites failed: %s", exc)
                failure = f"backend error: {type(exc).__name__}: {exc}"
            else:
                for i, out in enumerate(outputs[:n]):
                    texts[i] = _first_sentence(asked[i][1] + out)
                    tokens[i] = self._count(out)
            t_llm = time.perf_counter() - t0
        share = (time.perf_counter() - start - t_llm) / max(1, len(items))
        seconds = [share + (t_llm / n if i < n else 0.0) for i in range(len(items))]
        known = titles
        results = []
        for i, it in enumerate(items):
            template, cited = base[i]
            llm = texts[i]
            reason: str | None = off if i >= n else failure
            if llm is not None:
                try:
                    self.validate(
                        llm,
                        item_title=it.title,
                        evidence=it.evidence,
                        titles=known,
                        cited=base[i][1],
                    )
                except ValueError as exc:
                    reason = f"rejected: {exc}"
                else:
                    results.append(
                        ExplanationResult(
                            item_id=it.item_id,
                            text=llm,
                            source="llm",
                            template=template,
                            cited=self._cited(llm, it.evidence, known),
                            evidence=it.evidence,
                            llm_text=llm,
                            tokens=tokens[i],
                            seconds=seconds[i],
                        )
                    )
                    continue
            results.append(
                ExplanationResult(
                    item_id=it.item_id,
                    text=template,
                    source="template",
                    template=template,
                    cited=cited,
                    evidence=it.evidence,
                    llm_text=llm,
                    rejected=reason,
                    tokens=tokens[i],
                    seconds=seconds[i],
                )
            )
        return results

    def _count(self, text: str) -> int:
        try:
            assert self.generator is not None
            return len(self.generator.tokenizer.encode(text))  # type: ignore[attr-defined]
        except Exception:  # a tokenizer without encode: count words instead
            return len(text.split())

    def prompt(self, item: ExplainItem, sentence: str, query: str | None) -> tuple[str, str]:
        """The chat-formatted rewrite prompt of one item, and the start of the reply
        written for the model (the template's ``assistant`` text, already at the prompt's
        end)."""
        assert self.generator is not None
        values = {
            "item": display_title(item.title),
            "evidence": sentence,
            "query": f"Request: {sanitize(query)}\n" if query else "",
        }
        used = {k: v for k, v in values.items() if k in self.template.variables}
        messages = [Message("user", self.template.user.format(**used))]
        if self.template.system:
            messages.insert(0, Message("system", self.template.system.format(**used)))
        start = self.template.assistant.format(**used)
        return self.generator.tokenizer.chat_text(messages) + start, start

    def validate(
        self,
        text: str,
        *,
        item_title: str,
        evidence: Evidence | None,
        titles: TitleIndex | None = None,
        cited: Iterable[Any] | None = None,
    ) -> str:
        """Check one rewrite; returns it. ``cited``: the ids of the history items the
        evidence sentence named (None: every history item of the evidence); the rewrite
        may name those and the item, nothing else.

        Raises:
            ValueError: Too long or too short, copies the prompt's placeholder, only
                restates the item's title, or mentions a title that is neither the item
                nor a cited history item.
        """
        text = text.strip()
        if not text:
            raise ValueError("empty")
        if len(text) > self.config.max_reason_chars:
            raise ValueError(f"longer than {self.config.max_reason_chars} characters")
        words = _WORD.findall(text)
        if len(words) < self.config.min_reason_words:
            raise ValueError(f"{len(words)} word(s), fewer than {self.config.min_reason_words}")
        if _norm(text) in _PLACEHOLDERS:
            raise ValueError(f"{text!r} copies the prompt's placeholder")
        title_words = {w.lower() for w in _WORD.findall(item_title)}
        filler = {"you", "may", "might", "like", "enjoy", "recommended", "recommend", "the"}
        if {w.lower() for w in words} <= title_words | filler:
            raise ValueError("only restates the item's title")
        named = None if cited is None else set(cited)
        allowed = [item_title] + [
            h.title
            for h in (evidence.history if evidence else ())
            if named is None or h.item_id in named
        ]
        allowed_keys = {_title_key(t) for t in allowed}
        index = titles or TitleIndex(allowed)
        outside = sorted(m for m in index.mentions(text, allowed=allowed) if m not in allowed_keys)
        if outside:
            raise ValueError(f"mentions {outside[0].lstrip('?')!r}, which is not in the evidence")
        if not text.endswith((".", "!", "?")):
            raise ValueError("unfinished sentence (cut off at max_tokens?)")
        return text

    def _cited(
        self, text: str, evidence: Evidence | None, titles: TitleIndex | None
    ) -> tuple[Any, ...]:
        if evidence is None:
            return ()
        words = " " + " ".join(re.findall(r"[^\W_]+", text.lower())) + " "
        return tuple(h.item_id for h in evidence.history if f" {_title_key(h.title)} " in words)


def _first_sentence(text: str) -> str:
    """The output up to its first line break, without quotes or list markers around it."""
    line = text.strip().split("\n", 1)[0].strip()
    line = re.sub(r"^(\d+[.)]|[-*•])\s*", "", line)
    return line.strip().strip('"').strip()
