"""A sequential neural channel: SASRec (Kang and McAuley 2018), a causal transformer over
each user's item sequence, trained with full-softmax cross-entropy on the next item, in
plain torch. Its item embeddings go into the vector index; the search vector of a user is
the transformer's output at their newest item."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragrec.errors import ConfigError
from ragrec.retrieval._channels import ChannelConfig, ChannelContext, register_channel
from ragrec.retrieval._types import RetrievalQuery
from ragrec.retrieval._vector import VectorChannel

logger = logging.getLogger(__name__)

__all__ = ["SASRecChannel", "SASRecConfig"]


class SASRecConfig(ChannelConfig):
    """Configuration of :class:`SASRecChannel`. The defaults were chosen on the llamarec
    validation split of ml-latest-small (benchmarks/retrieval_quality.py)."""

    dim: int = Field(default=64, ge=2, description="Embedding and hidden size.")
    blocks: int = Field(default=2, ge=1, description="Transformer blocks.")
    heads: int = Field(default=1, ge=1, description="Attention heads (must divide dim).")
    max_len: int = Field(
        default=200, ge=2, description="Newest history items the model reads per user."
    )
    dropout: float = Field(default=0.2, ge=0, lt=1, description="Dropout rate.")
    epochs: int = Field(default=15, ge=1, description="Passes over the training windows.")
    learning_rate: float = Field(default=3e-3, gt=0, description="Adam step size.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(default=64, ge=1, description="Training windows per step.")
    windows: Literal["last", "all"] = Field(
        default="all",
        description="Training windows of max_len + 1 items: 'last' takes each user's "
        "newest only; 'all' cuts the whole sequence into consecutive windows.",
    )
    refit_epochs: int = Field(
        default=3,
        ge=1,
        description="Epochs of partial_fit (incremental refit from the current weights).",
    )
    seed: int = Field(default=0, description="Seed of the initial weights and batch order.")
    threads: int = Field(
        default=0,
        ge=0,
        description="torch CPU threads while training and encoding (restored afterwards); "
        "0 leaves torch's setting.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when torch sees a GPU, else CPU."
    )
    encode_batch: int = Field(
        default=256, ge=1, description="Users encoded per forward pass when retrieving."
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.heads:
            raise ValueError(
                f"heads={self.heads} must divide dim={self.dim}; pick e.g. heads=1 or "
                f"dim={self.heads * max(1, self.dim // self.heads)}"
            )
        return self


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise ConfigError(
            "channel 'sasrec' needs torch: pip install torch (the CPU build is enough)"
        ) from exc
    return torch


def _build_model(torch: Any, n_items: int, cfg: SASRecConfig) -> Any:
    nn = torch.nn
    functional = torch.nn.functional

    class Block(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(cfg.dim)
            self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
            self.out = nn.Linear(cfg.dim, cfg.dim)
            self.ln2 = nn.LayerNorm(cfg.dim)
            self.ff = nn.Sequential(
                nn.Linear(cfg.dim, cfg.dim),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.dim, cfg.dim),
            )
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: Any, mask: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = (
                self.qkv(self.ln1(x))
                .view(b, t, 3, cfg.heads, cfg.dim // cfg.heads)
                .permute(2, 0, 3, 1, 4)
            )
            a = functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=cfg.dropout if self.training else 0.0
            )
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, cfg.dim)))
            return x + self.drop(self.ff(self.ln2(x)))

    class SASRec(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
            self.pos = nn.Embedding(cfg.max_len, cfg.dim)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.blocks))
            self.ln = nn.LayerNorm(cfg.dim)
            self.drop = nn.Dropout(cfg.dropout)
            nn.init.normal_(self.item.weight, std=0.02)
            nn.init.normal_(self.pos.weight, std=0.02)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq: Any) -> Any:
            """Hidden states ``(B, T, dim)`` of left-padded ids (0 = padding), ``T <=
            max_len``; the last column is position ``max_len - 1`` whatever ``T`` is, so
            a batch cut to its longest sequence equals one padded to ``max_len``."""
            _, t = seq.shape
            positions = torch.arange(cfg.max_len - t, cfg.max_len, device=seq.device)
            x = self.drop(self.item(seq) * math.sqrt(cfg.dim) + self.pos(positions)[None])
            causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()
            mask = causal[None, None] & (seq > 0)[:, None, None, :]
            # padding rows attend to themselves, so no row of the softmax is empty
            mask = mask | torch.eye(t, dtype=torch.bool, device=seq.device)[None, None]
            for block in self.blocks:
                x = block(x, mask)
            return self.ln(x)

    return SASRec()


def _trim(*batches: Any) -> tuple[Any, ...]:
    """Drop the leading columns that are padding in every row of the first batch (the
    model gives the same outputs for the rest; short sequences train much faster)."""
    used = (batches[0] > 0).any(dim=0)
    start = int(used.int().argmax()) if bool(used.any()) else batches[0].shape[1] - 1
    return tuple(b[:, start:] for b in batches)


def _pad_left(seqs: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Ids shifted by one (0 is padding), newest ``length`` items, right-aligned."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, seq in enumerate(seqs):
        tail = np.asarray(seq, dtype=np.int64)[-length:]
        if len(tail):
            out[i, length - len(tail) :] = tail + 1
    return out


class _TorchThreads:
    """Scoped ``torch.set_num_threads`` (0: unchanged); restored on exit."""

    def __init__(self, torch: Any, threads: int) -> None:
        self.torch, self.threads = torch, threads

    def __enter__(self) -> None:
        self.before = self.torch.get_num_threads()
        if self.threads:
            self.torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        self.torch.set_num_threads(self.before)


class SASRecChannel(VectorChannel):
    """SASRec over the time-ordered history: proposes the nearest item embeddings (inner
    product, through the vector index) to the transformer's output at the newest item.

    Trained on the training rows' sequences (windows of ``max_len + 1`` items; every
    position predicts its next item with a softmax over the whole catalog), seeded, on
    CUDA when torch sees a GPU (``device``). :meth:`partial_fit` continues training from
    the current weights on new rows (incremental refit after feedback). The fitted
    weights are saved with the store (:meth:`state`).
    """

    kind = "sasrec"
    config_class = SASRecConfig
    config: SASRecConfig

    def __init__(self, config: ChannelConfig | None = None, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self._model: Any = None
        self.losses: list[float] = []

    @property
    def device(self) -> str:
        """The torch device the model trains and encodes on."""
        want = self.config.device
        if want == "cpu":
            return "cpu"
        cuda = _import_torch().cuda.is_available()
        if want == "cuda" and not cuda:
            raise ConfigError(
                f"channel {self.name!r}: device='cuda' but torch sees no GPU; use "
                "device='auto' or 'cpu'"
            )
        return "cuda" if cuda else "cpu"

    def _fit_vectors(self, context: ChannelContext) -> tuple[np.ndarray, np.ndarray]:
        torch = _import_torch()
        n = len(context.catalog)
        generator = torch.Generator().manual_seed(self.config.seed)
        with _TorchThreads(torch, self.config.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._model = _build_model(torch, n, self.config).to(self.device)
        self.losses = []
        self._train(context, self.config.epochs, generator)
        return self._item_vectors(n), self._known_items(context, n)

    def partial_fit(self, context: ChannelContext, *, epochs: int | None = None) -> SASRecChannel:
        """Continue training from the current weights on ``context``'s rows (say, after
        feedback added interactions) for ``epochs`` (default ``refit_epochs``), then
        rebuild the item index. Items new to the catalog start from fresh embeddings;
        items that left it are dropped.

        Raises:
            ConfigError: The channel was never fit (call :meth:`fit`).
        """
        self._check_fitted()
        torch = _import_torch()
        n = len(context.catalog)
        if n != self._n_items or not np.array_equal(
            context.catalog.item_ids, self._catalog.item_ids
        ):
            self._remap_items(torch, context)
        generator = torch.Generator().manual_seed(self.config.seed + len(self.losses))
        start = time.perf_counter()
        self._train(context, epochs or self.config.refit_epochs, generator)
        self._set_vectors(context, self._item_vectors(n), self._known_items(context, n))
        self.fit_seconds = time.perf_counter() - start
        return self

    def _remap_items(self, torch: Any, context: ChannelContext) -> None:
        old = self._model.item.weight.detach().cpu()
        fresh = _build_model(torch, len(context.catalog), self.config)
        fresh.load_state_dict(
            {k: v for k, v in self._model.state_dict().items() if not k.startswith("item.")},
            strict=False,
        )
        where = self._catalog.positions(context.catalog.item_ids)
        with torch.no_grad():
            keep = np.flatnonzero(where >= 0)
            fresh.item.weight[torch.from_numpy(keep + 1)] = old[torch.from_numpy(where[keep] + 1)]
        self._model = fresh.to(self.device)

    @staticmethod
    def _known_items(context: ChannelContext, n: int) -> np.ndarray:
        known = np.zeros(n, dtype=bool)
        for seq in context.sequences.values():
            known[seq] = True
        return known

    def _windows(self, context: ChannelContext) -> list[np.ndarray]:
        length = self.config.max_len + 1
        out = []
        for seq in context.sequences.values():
            if len(seq) < 2:
                continue
            if self.config.windows == "last":
                out.append(seq[-length:])
                continue
            end = len(seq)
            while end >= 2:
                out.append(seq[max(0, end - length) : end])
                end -= length - 1
        return out

    def _train(self, context: ChannelContext, epochs: int, generator: Any) -> None:
        torch = _import_torch()
        cfg = self.config
        windows = self._windows(context)
        if not windows:
            return
        model = self._model
        device = self.device
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            betas=(0.9, 0.98),
        )
        cross_entropy = torch.nn.functional.cross_entropy
        inputs = torch.from_numpy(_pad_left([w[:-1] for w in windows], cfg.max_len))
        targets = torch.from_numpy(_pad_left([w[1:] for w in windows], cfg.max_len))
        start = time.perf_counter()
        with _TorchThreads(torch, cfg.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + len(self.losses))
            model.train()
            for epoch in range(epochs):
                order = torch.randperm(len(windows), generator=generator)
                total, steps = 0.0, 0
                for lo in range(0, len(windows), cfg.batch_size):
                    rows = order[lo : lo + cfg.batch_size]
                    x, y = _trim(inputs[rows], targets[rows])
                    x, y = x.to(device), y.to(device)
                    hidden = model(x)
                    keep = y > 0
                    logits = hidden[keep] @ model.item.weight[1:].T
                    loss = cross_entropy(logits, y[keep] - 1)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    steps += 1
                self.losses.append(total / max(steps, 1))
                logger.debug("%s epoch %d loss %.4f", self.name, epoch + 1, self.losses[-1])
            model.eval()
        logger.info(
            "%s: %d epochs over %d windows on %s in %.1f s (loss %.3f)",
            self.name,
            epochs,
            len(windows),
            device,
            time.perf_counter() - start,
            self.losses[-1],
        )

    def _item_vectors(self, n: int) -> np.ndarray:
        weight = self._model.item.weight.detach()[1 : n + 1]
        return np.asarray(weight.float().cpu().numpy(), dtype=np.float32)

    def user_vectors(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        if self._model is None:
            raise ConfigError(f"channel {self.name!r} used before fit(); call fit first")
        torch = _import_torch()
        cfg = self.config
        out = np.zeros((len(queries), cfg.dim), dtype=np.float32)
        with _TorchThreads(torch, cfg.threads), torch.inference_mode():
            for lo in range(0, len(queries), cfg.encode_batch):
                part = queries[lo : lo + cfg.encode_batch]
                x = torch.from_numpy(_pad_left([q.history for q in part], cfg.max_len))
                (x,) = _trim(x)
                hidden = self._model(x.to(self.device))[:, -1]
                out[lo : lo + len(part)] = hidden.float().cpu().numpy()
        return out

    # persistence ------------------------------------------------------------------------

    def _extra_state(self) -> dict[str, np.ndarray]:
        weights = {
            f"model.{k}": v.detach().cpu().numpy() for k, v in self._model.state_dict().items()
        }
        return {**weights, "losses": np.asarray(self.losses, dtype=np.float64)}

    def _load_extra_state(self, context: ChannelContext, state: Mapping[str, Any]) -> None:
        torch = _import_torch()
        n = len(context.catalog)
        model = _build_model(torch, n, self.config)
        params = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
        except RuntimeError as exc:
            raise ConfigError(
                f"channel {self.name!r}: saved weights do not fit this config and catalog "
                f"({str(exc).splitlines()[0]}); rebuild the store (ragrec index --force)"
            ) from exc
        self._model = model.to(self.device).eval()
        self.losses = [float(v) for v in np.asarray(state.get("losses", []))]


register_channel(SASRecChannel)
