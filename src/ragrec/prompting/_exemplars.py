"""Few-shot exemplars: a bounded pool of worked ranking examples, selected per request by
similarity with diversity (langchain-core's MMR example selector), within a token budget."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.example_selectors import MaxMarginalRelevanceExampleSelector
from langchain_core.vectorstores import InMemoryVectorStore

from ragrec.data import Catalog, Interactions, user_sequences
from ragrec.errors import ConfigError
from ragrec.prompting._builder import LABELS, Message, TokenizerLike
from ragrec.prompting._exemplar_io import read_pool_file, write_pool_file
from ragrec.prompting._exemplar_model import (
    CandidatesFn,
    Exemplar,
    ExemplarConfig,
    ExemplarSource,
    _history_text,
    _json_id,
    render_exemplar,
)
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
        write_pool_file(target, records)
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
        exemplars = read_pool_file(source)
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
