"""Few-shot exemplars: a bounded pool of worked ranking examples, selected per request by
similarity with diversity (langchain-core's MMR example selector), within a token budget."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.example_selectors import MaxMarginalRelevanceExampleSelector
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions, user_sequences
from ragrec.errors import ConfigError, DataValidationError, Problem
from ragrec.prompting._builder import LABELS, Message, TokenizerLike, sanitize
from ragrec.prompting._templates import DEFAULT_RANK_TEMPLATE, PromptTemplate

if TYPE_CHECKING:
    from ragrec.retrieval import Embedder

logger = logging.getLogger(__name__)

__all__ = [
    "CandidatesFn",
    "Exemplar",
    "ExemplarConfig",
    "ExemplarPool",
    "ExemplarSource",
    "render_exemplar",
]

ExemplarSource = Literal["train", "feedback"]
"""Where an exemplar came from: a training user's sequence, or a user's feedback."""

CandidatesFn = Callable[[Any, np.ndarray, int], Sequence[int]]
"""``(user id, history positions, k) -> catalog positions``, best first: where seeded
exemplars take their wrong candidates from (a retriever, typically)."""

POOL_FORMAT = "ragrec-exemplar-pool"
POOL_VERSION = 1


class ExemplarConfig(Settings):
    """Configuration of :class:`ExemplarPool`: how many exemplars a prompt gets, how they
    are chosen, their token budget, and how a pool is seeded.

    Every exemplar costs prompt tokens (and a forward pass over them). With
    ``selection="similar"`` each user gets their own exemplars, so the shared prompt prefix
    differs per user and the generator's prefix cache cannot be reused; ``"fixed"`` gives
    every user the same exemplars, which the prefix cache computes once.
    """

    k: int = Field(
        default=2,
        ge=0,
        le=8,
        description="Exemplars per prompt (0: none). The LLM ranker's default config sets "
        "k=0 (off); giving it an [exemplars] table turns them on with this default.",
    )
    selection: Literal["similar", "fixed"] = Field(
        default="similar",
        description="similar: per user, the exemplars whose history is closest to theirs "
        "(MMR for diversity); fixed: the same seeded choice for every user (prefix-cacheable).",
    )
    max_tokens: int = Field(
        default=400,
        ge=16,
        description="Token budget of all exemplars' messages together, by the generator's "
        "tokenizer; exemplars that do not fit are dropped. Exemplars also count toward the "
        "prompt's max_prompt_tokens (the builder cuts the request's history to fit).",
    )
    fetch_k: int = Field(
        default=20, ge=1, description="Most similar exemplars that MMR re-ranks for diversity."
    )
    lambda_mult: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="MMR trade-off: 1 ranks by similarity alone, 0 by diversity alone.",
    )
    pool_size: int = Field(
        default=1000,
        ge=1,
        description="Most exemplars kept; when full, the oldest train exemplar is evicted "
        "first (feedback exemplars only when no train exemplar is left).",
    )
    n_seed: int = Field(
        default=200, ge=1, description="Training users a ranker seeds the pool from."
    )
    max_history: int = Field(
        default=5,
        ge=1,
        description="History titles per seeded exemplar (its most recent); similarity also "
        "compares only a request's most recent max_history titles.",
    )
    n_candidates: int = Field(
        default=5, ge=2, le=26, description="Candidates per seeded exemplar (labels A..)."
    )
    seed: int = Field(default=0, description="Seed of seeding and of the fixed selection.")

    @model_validator(mode="after")
    def _fetch_at_least_k(self) -> ExemplarConfig:
        if self.fetch_k < self.k:
            raise ValueError(
                f"fetch_k={self.fetch_k} is below k={self.k}: MMR picks k of the fetch_k most "
                "similar exemplars; raise fetch_k"
            )
        return self


def _json_id(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _history_text(titles: Sequence[str], max_history: int) -> str:
    """What similarity compares: the most recent titles, one per line."""
    kept = [sanitize(t) for t in titles][-max_history:]
    return "\n".join(kept) or "(none)"


@dataclass(frozen=True, kw_only=True)
class Exemplar:
    """One worked ranking example: a history, labelled candidates and the label chosen.

    The id is derived from the content the model sees (sanitized history, candidates and
    label), so identical exemplars share an id and a pool keeps one of them.

    Attributes:
        user_id: Whose data it was built from (to delete it on request).
        history: History titles, oldest first.
        candidates: Candidate titles in label order (``candidates[0]`` is ``A``).
        label: The label of the chosen candidate.
        reason: Why it was chosen, when known (kept, not shown to the model).
        source: ``"train"`` (seeded from training data) or ``"feedback"``.
        history_ids: Item ids of ``history`` (empty when unknown).
        candidate_ids: Item ids of ``candidates`` (empty when unknown).
        id: Content hash, ``ex-`` and 16 hex digits.
    """

    user_id: Any
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    label: str
    reason: str | None = None
    source: ExemplarSource = "train"
    history_ids: tuple[Any, ...] = ()
    candidate_ids: tuple[Any, ...] = ()
    id: str = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "user_id", _json_id(self.user_id))
        set_(self, "history", tuple(str(t) for t in self.history))
        set_(self, "candidates", tuple(str(t) for t in self.candidates))
        set_(self, "history_ids", tuple(_json_id(i) for i in self.history_ids))
        set_(self, "candidate_ids", tuple(_json_id(i) for i in self.candidate_ids))
        n = len(self.candidates)
        if not 2 <= n <= len(LABELS):
            raise ConfigError(
                f"an exemplar needs 2 to {len(LABELS)} candidates, got {n}; pass the chosen "
                "item and at least one other"
            )
        if self.label not in LABELS[:n]:
            raise ConfigError(
                f"exemplar label {self.label!r} is not one of its {n} candidates' labels "
                f"{LABELS[0]}..{LABELS[n - 1]}"
            )
        if self.source not in ("train", "feedback"):
            raise ConfigError(f"exemplar source {self.source!r} must be 'train' or 'feedback'")
        for name, ids, titles in (
            ("history_ids", self.history_ids, self.history),
            ("candidate_ids", self.candidate_ids, self.candidates),
        ):
            if ids and len(ids) != len(titles):
                raise ConfigError(
                    f"exemplar {name} has {len(ids)} ids for {len(titles)} titles; pass one "
                    "id per title or none"
                )
        content = json.dumps(
            [
                [sanitize(t) for t in self.history],
                [sanitize(t) for t in self.candidates],
                self.label,
            ]
        )
        set_(self, "id", "ex-" + hashlib.sha256(content.encode()).hexdigest()[:16])

    @property
    def chosen(self) -> str:
        """The chosen candidate's title."""
        return self.candidates[LABELS.index(self.label)]

    @property
    def chosen_id(self) -> Any:
        """The chosen candidate's item id (``None`` when ids are unknown)."""
        return self.candidate_ids[LABELS.index(self.label)] if self.candidate_ids else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the pool file's records)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "source": self.source,
            "history": list(self.history),
            "history_ids": list(self.history_ids),
            "candidates": list(self.candidates),
            "candidate_ids": list(self.candidate_ids),
            "label": self.label,
            "reason": self.reason,
        }


class _Record(BaseModel):
    """One exemplar as stored in a pool file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = None
    user_id: int | str | None
    source: Literal["train", "feedback"] = "train"
    history: list[str]
    history_ids: list[int | str] = Field(default_factory=list)
    candidates: list[str]
    candidate_ids: list[int | str] = Field(default_factory=list)
    label: str
    reason: str | None = None


class _EmbedderEmbeddings(Embeddings):
    """A ragrec :class:`~ragrec.retrieval.Embedder` as langchain-core ``Embeddings``."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embedder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in self.embedder.encode([text])[0]]


class _MMRSelector(MaxMarginalRelevanceExampleSelector):
    """The langchain-core MMR selector with the trade-off and the store's search options
    passed through (its own ``select_examples`` passes neither)."""

    lambda_mult: float = 0.5

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        docs = self.vectorstore.max_marginal_relevance_search(
            self._example_to_text(input_variables, self.input_keys),
            k=self.k,
            fetch_k=self.fetch_k,
            lambda_mult=self.lambda_mult,
            **(self.vectorstore_kwargs or {}),
        )
        return self._documents_to_examples(docs)


def render_exemplar(
    exemplar: Exemplar, template: PromptTemplate = DEFAULT_RANK_TEMPLATE
) -> tuple[Message, Message]:
    """An exemplar as a (user, assistant) turn: the user message in the rank template's
    format (no request text), the answer its label. All item text is sanitized.

    Raises:
        ConfigError: ``template`` is not a rank template.
    """
    if template.kind != "rank":
        raise ConfigError(
            f"exemplars render with a rank template; {template.id!r} is a {template.kind!r} "
            "template (pass the prompt builder's template)"
        )
    labels = LABELS[: len(exemplar.candidates)]
    values = {
        "history": "\n".join(f"- {sanitize(t)}" for t in exemplar.history) or "(none)",
        "candidates": "\n".join(
            f"{label}. {sanitize(t)}" for label, t in zip(labels, exemplar.candidates, strict=True)
        ),
        "query": "",
        "n_candidates": str(len(labels)),
        "first_label": labels[0],
        "last_label": labels[-1],
    }
    used = {k: v for k, v in values.items() if k in template.variables}
    return Message("user", template.user.format(**used)), Message("assistant", exemplar.label)


class ExemplarPool:
    """A bounded, de-duplicated pool of exemplars and their selection.

    Args:
        config: Selection, budget, size and seeding settings.
        embedder: Encodes histories for ``selection="similar"``; default: the bundled
            all-MiniLM-L6-v2, loaded on first selection. Unused with ``"fixed"``.
    """

    def __init__(
        self, config: ExemplarConfig | None = None, *, embedder: Embedder | None = None
    ) -> None:
        self.config = config or ExemplarConfig()
        self._embedder = embedder
        self._items: dict[str, Exemplar] = {}
        self._store: InMemoryVectorStore | None = None
        self._fixed: list[Exemplar] | None = None

    # contents -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Exemplar]:
        return iter(list(self._items.values()))

    def __contains__(self, exemplar_id: object) -> bool:
        return exemplar_id in self._items

    def get(self, exemplar_id: str) -> Exemplar:
        """The exemplar with this id; raises ``KeyError`` naming it when absent."""
        try:
            return self._items[exemplar_id]
        except KeyError:
            raise KeyError(f"no exemplar {exemplar_id!r} in the pool ({len(self)})") from None

    def add(self, exemplar: Exemplar) -> bool:
        """Add one exemplar; False when the pool already holds the same content."""
        return self.add_many([exemplar]) == 1

    def add_many(self, exemplars: Iterable[Exemplar]) -> int:
        """Add exemplars (duplicates of pooled content skipped), evicting the oldest train
        exemplars beyond ``pool_size``. Returns how many were added."""
        added: list[Exemplar] = []
        for ex in exemplars:
            if not isinstance(ex, Exemplar):
                raise ConfigError(f"the pool takes Exemplar objects, got {type(ex).__name__}")
            if ex.id in self._items:
                continue
            if len(self._items) >= self.config.pool_size:
                self._evict()
            self._items[ex.id] = ex
            added.append(ex)
        kept = [ex for ex in added if ex.id in self._items]  # a big batch can evict its own
        if kept:
            self._fixed = None
        if self._store is not None and kept:
            self._store.add_documents([self._document(ex) for ex in kept], ids=[e.id for e in kept])
        return len(kept)

    def _evict(self) -> None:
        victim = next((e for e in self._items.values() if e.source == "train"), None)
        if victim is None:
            victim = next(iter(self._items.values()))
        logger.debug("exemplar pool full (%d): evicting %s", self.config.pool_size, victim.id)
        self._drop([victim.id])

    def _drop(self, ids: Sequence[str]) -> None:
        for i in ids:
            self._items.pop(i, None)
        self._fixed = None
        if self._store is not None and ids:
            self._store.delete(list(ids))

    def remove(self, exemplar_id: str) -> bool:
        """Remove one exemplar by id; False when it is not in the pool."""
        if exemplar_id not in self._items:
            return False
        self._drop([exemplar_id])
        return True

    def forget_user(self, user_id: Any) -> int:
        """Remove every exemplar built from ``user_id``'s data; returns how many."""
        uid = _json_id(user_id)
        ids = [e.id for e in self._items.values() if e.user_id == uid]
        self._drop(ids)
        return len(ids)

    # seeding ------------------------------------------------------------------------------

    def seed_from_training(
        self,
        catalog: Catalog,
        interactions: Interactions,
        *,
        n: int | None = None,
        candidates: CandidatesFn | None = None,
        rng: int | np.random.Generator | None = None,
    ) -> int:
        """Add exemplars built from training users' sequences.

        For each of ``n`` users (sampled among those with two or more rows), the chosen
        item is their last row in ``interactions``, the history the rows before it (most
        recent ``max_history``), and the wrong candidates come from ``candidates`` (then
        random catalog items) excluding the user's items; the candidates are shuffled so
        the chosen label is uniform. Pass training rows only: held-out targets must never
        become exemplars.

        Args:
            catalog: Items (titles).
            interactions: Training rows.
            n: Users to build exemplars from (default ``config.n_seed``).
            candidates: Where wrong candidates come from; default random items.
            rng: Seed or generator (default ``config.seed``).

        Returns:
            How many exemplars were added (duplicates are skipped).
        """
        count = self.config.n_seed if n is None else n
        if count < 0:
            raise ConfigError(f"n={count} must be >= 0")
        if len(catalog) < 2:
            raise ConfigError(
                f"seeding exemplars needs a catalog of 2 or more items, got {len(catalog)}"
            )
        gen = np.random.default_rng(self.config.seed if rng is None else rng)
        sequences, _ = user_sequences(catalog, interactions)
        eligible = sorted(u for u, seq in sequences.items() if len(seq) >= 2)
        picked = gen.permutation(len(eligible))[: min(count, len(eligible))]
        m = min(self.config.n_candidates, len(catalog)) - 1
        built = []
        for idx in picked:
            user = eligible[int(idx)]
            seq = sequences[user]
            target = int(seq[-1])
            seen = {int(p) for p in seq}
            wrong: list[int] = []
            if candidates is not None and m > 0:
                for p in candidates(user, seq[:-1], m + len(seen)):
                    if int(p) not in seen and int(p) not in wrong:
                        wrong.append(int(p))
                    if len(wrong) == m:
                        break
            wrong += _random_positions(gen, len(catalog), m - len(wrong), seen | set(wrong))
            shown = [target, *wrong]
            shown = [shown[i] for i in gen.permutation(len(shown))]
            hist = seq[:-1][-self.config.max_history :]
            built.append(
                Exemplar(
                    user_id=user,
                    history=tuple(str(catalog.titles[p]) for p in hist),
                    history_ids=tuple(catalog.item_ids[hist]),
                    candidates=tuple(str(catalog.titles[p]) for p in shown),
                    candidate_ids=tuple(catalog.item_ids[shown]),
                    label=LABELS[shown.index(target)],
                    source="train",
                )
            )
        added = self.add_many(built)
        logger.info("exemplar pool seeded: %d exemplars from %d training users", added, len(built))
        return added

    # selection ----------------------------------------------------------------------------

    def to_messages(
        self, exemplar: Exemplar, template: PromptTemplate | None = None
    ) -> tuple[Message, Message]:
        """An exemplar as a (user, assistant) turn in ``template``'s format (default: the
        default rank template); see :func:`render_exemplar`."""
        return render_exemplar(exemplar, template or DEFAULT_RANK_TEMPLATE)

    def tokens(
        self,
        exemplar: Exemplar,
        *,
        tokenizer: TokenizerLike,
        template: PromptTemplate | None = None,
    ) -> int:
        """Tokens of an exemplar's two messages (their text; chat markers excluded)."""
        user, answer = self.to_messages(exemplar, template)
        return tokenizer.count_tokens(user.content) + tokenizer.count_tokens(answer.content)

    def select(
        self,
        history: Sequence[str] | str,
        *,
        tokenizer: TokenizerLike,
        template: PromptTemplate | None = None,
        k: int | None = None,
        exclude_user: Any = None,
    ) -> list[Exemplar]:
        """Up to ``k`` exemplars for a request, best first, within ``max_tokens``.

        ``"similar"``: MMR over the exemplars' histories (langchain-core's selector over an
        in-memory vector store) against the request's recent history. ``"fixed"``: a
        seeded order, the same for every request. Exemplars in preference order that would
        exceed the budget are skipped.

        Args:
            history: The request's history titles, oldest first (or one text).
            tokenizer: The generator's tokenizer (measures the budget).
            template: The rank template exemplars are rendered with (default template).
            k: Exemplars wanted (default ``config.k``).
            exclude_user: Leave out exemplars built from this user's data (a user never
                sees their own exemplars); ``None`` excludes nobody.
        """
        want = self.config.k if k is None else k
        if want < 0:
            raise ConfigError(f"k={want} must be >= 0")
        if want == 0 or not self._items:
            return []
        uid = _json_id(exclude_user)
        if self.config.selection == "fixed":
            if self._fixed is None:
                self._fixed = sorted(self._items.values(), key=self._fixed_key)
            ranked = [e for e in self._fixed if uid is None or e.user_id != uid]
        else:
            ranked = self._similar(history, uid)
        chosen: list[Exemplar] = []
        used = 0
        for ex in ranked:
            cost = self.tokens(ex, tokenizer=tokenizer, template=template)
            if used + cost > self.config.max_tokens:
                continue
            chosen.append(ex)
            used += cost
            if len(chosen) == want:
                break
        return chosen

    def _fixed_key(self, exemplar: Exemplar) -> str:
        return hashlib.sha256(f"{self.config.seed}:{exemplar.id}".encode()).hexdigest()

    def _similar(self, history: Sequence[str] | str, exclude: Any) -> list[Exemplar]:
        text = (
            history if isinstance(history, str) else _history_text(history, self.config.max_history)
        )
        fetch = min(self.config.fetch_k, len(self._items))
        kwargs: dict[str, Any] = {}
        if exclude is not None:
            kwargs["filter"] = lambda doc: bool(doc.metadata["user_id"] != exclude)
        selector = _MMRSelector(
            vectorstore=self._vectorstore(),
            k=fetch,
            fetch_k=fetch,
            lambda_mult=self.config.lambda_mult,
            input_keys=["history"],
            vectorstore_kwargs=kwargs,
        )
        picked = selector.select_examples({"history": text})
        return [self._items[m["id"]] for m in picked if m["id"] in self._items]

    def _document(self, exemplar: Exemplar) -> Document:
        return Document(
            page_content=_history_text(exemplar.history, self.config.max_history),
            metadata={"id": exemplar.id, "user_id": exemplar.user_id},
        )

    def _vectorstore(self) -> InMemoryVectorStore:
        if self._store is None:
            if self._embedder is None:
                from ragrec.retrieval import SentenceTransformerEmbedder

                self._embedder = SentenceTransformerEmbedder()
            store = InMemoryVectorStore(_EmbedderEmbeddings(self._embedder))
            items = list(self._items.values())
            if items:
                store.add_documents([self._document(e) for e in items], ids=[e.id for e in items])
            self._store = store
        return self._store

    # persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the pool as JSON, atomically (a temporary file renamed over ``path``).

        Raises:
            ConfigError: A user or item id is neither an integer nor a string.
        """
        target = Path(path)
        records = [e.to_dict() for e in self._items.values()]
        for rec in records:
            for value in (rec["user_id"], *rec["history_ids"], *rec["candidate_ids"]):
                if value is not None and not isinstance(value, int | str):
                    raise ConfigError(
                        f"exemplar {rec['id']}: id {value!r} ({type(value).__name__}) cannot be "
                        "saved; user and item ids must be integers or strings"
                    )
        payload = {"format": POOL_FORMAT, "version": POOL_VERSION, "exemplars": records}
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, ensure_ascii=False, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(
        cls,
        path: str | Path,
        config: ExemplarConfig | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> ExemplarPool:
        """Read a pool written by :meth:`save`.

        Raises:
            ConfigError: The file does not exist.
            DataValidationError: The file is not a pool file, or a record is invalid
                (names the file, the record and the field).
        """
        source = Path(path)
        fix = "restore the file from a backup, or delete it and seed a new pool"
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"exemplar pool file {str(source)!r} not found; check the path, or seed a pool "
                "and save() it first"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataValidationError(
                str(source), f"cannot be read as UTF-8 ({exc})", fix=fix
            ) from exc
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataValidationError(str(source), f"not valid JSON ({exc})", fix=fix) from exc
        if not isinstance(payload, dict) or payload.get("format") != POOL_FORMAT:
            raise DataValidationError(
                str(source),
                f"not an exemplar pool file (expected a JSON object with format={POOL_FORMAT!r})",
                fix=fix,
            )
        if payload.get("version") != POOL_VERSION:
            raise DataValidationError(
                str(source),
                f"pool file version {payload.get('version')!r} is not supported "
                f"(this ragrec reads version {POOL_VERSION})",
                fix="seed and save the pool again with this version",
            )
        records = payload.get("exemplars")
        if not isinstance(records, list):
            raise DataValidationError(
                str(source), "'exemplars' must be a list of exemplar records", fix=fix
            )
        problems: list[Problem] = []
        exemplars: list[Exemplar] = []
        for row, raw in enumerate(records, start=1):
            try:
                rec = _Record.model_validate(raw)
                ex = Exemplar(
                    user_id=rec.user_id,
                    history=tuple(rec.history),
                    candidates=tuple(rec.candidates),
                    label=rec.label,
                    reason=rec.reason,
                    source=rec.source,
                    history_ids=tuple(rec.history_ids),
                    candidate_ids=tuple(rec.candidate_ids),
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or None
                got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
                problems.append(Problem(row, where, f"{err['msg']}{got}"))
                continue
            except ConfigError as exc:
                problems.append(Problem(row, None, str(exc)))
                continue
            if rec.id is not None and rec.id != ex.id:
                problems.append(
                    Problem(row, "id", f"{rec.id} does not match its content ({ex.id})")
                )
                continue
            exemplars.append(ex)
        if problems:
            raise DataValidationError(
                str(source),
                "invalid exemplar records",
                problems,
                fix="correct or delete those records (an edited record needs its 'id' "
                "removed, to be recomputed)",
            )
        pool = cls(config, embedder=embedder)
        if len(exemplars) > pool.config.pool_size:
            logger.warning(
                "%s holds %d exemplars, over pool_size=%d: the oldest train exemplars are evicted",
                source,
                len(exemplars),
                pool.config.pool_size,
            )
        pool.add_many(exemplars)
        return pool


def _random_positions(
    gen: np.random.Generator, n_items: int, count: int, exclude: set[int]
) -> list[int]:
    """``count`` distinct positions in ``range(n_items)`` outside ``exclude`` (fewer when
    too few are left)."""
    free = n_items - len(exclude)
    if count <= 0 or free <= 0:
        return []
    if free <= 4 * count:
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(exclude, np.int64))
        return [int(p) for p in gen.choice(pool, size=min(count, len(pool)), replace=False)]
    out: list[int] = []
    while len(out) < count:
        p = int(gen.integers(n_items))
        if p not in exclude and p not in out:
            out.append(p)
    return out
