"""The ranker registry: every ranker name with its factory and config model, in one table.

Entries name their objects as ``"module:attribute"``, imported on first use, so checking a
name (:func:`known_ranker`, run when a configuration is validated) imports no ranker.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ragrec.errors import ConfigError, describe_validation_error
from ragrec.eval._rankers import Ranker

__all__ = ["RANKERS", "known_ranker", "make_ranker"]

RankerEntry = tuple[Callable[..., Ranker], type[BaseModel]]
"""``(factory, config model)``: the factory takes a validated config, returns a ranker."""


@dataclass(frozen=True)
class _Entry:
    factory: str
    config: str
    channel: str | None = None  # a channel ranker: ``factory(channel, config, name=...)``


def _ranker(module: str, ranker: str, config: str) -> _Entry:
    return _Entry(f"ragrec.eval.{module}:{ranker}", f"ragrec.eval.{module}:{config}")


def _channel(kind: str) -> _Entry:
    """A ranker that scores with one retrieval channel alone."""
    where = "ragrec.eval._retrieval_rankers"
    return _Entry(f"{where}:channel_ranker", f"{where}:ChannelRankerConfig", channel=kind)


_TABLE: dict[str, _Entry] = {
    "popularity": _ranker("_rankers", "PopularityRanker", "PopularityConfig"),
    "random": _ranker("_rankers", "RandomRanker", "RandomConfig"),
    "retrieval": _ranker("_retrieval_rankers", "RetrievalRanker", "RetrievalRankerConfig"),
    "llm": _ranker("_llm_ranker", "LLMRanker", "LLMRankerConfig"),
    "itemknn": _ranker("_cf_rankers", "ItemKNNRanker", "ItemKNNConfig"),
    "als": _ranker("_cf_rankers", "ALSRanker", "ALSConfig"),
    "bpr": _ranker("_cf_rankers", "BPRRanker", "BPRConfig"),
    # each retrieval channel alone; a name an independent baseline holds gets "-channel"
    "als-channel": _channel("als"),
    "bpr-channel": _channel("bpr"),
    "ease": _channel("ease"),
    "itemknn-channel": _channel("itemknn"),
    "popularity-channel": _channel("popularity"),
    "sasrec": _channel("sasrec"),
    "semantic": _channel("semantic"),
    "transition": _channel("transition"),
}


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@functools.cache
def _resolve(name: str) -> RankerEntry:
    entry = _TABLE[name]
    factory = _load(entry.factory)
    if entry.channel is not None:
        factory = functools.partial(factory, entry.channel, name=name)
    return factory, _load(entry.config)


class _Registry(Mapping[str, RankerEntry]):
    """Ranker name -> ``(factory, config model)``; the names are known without imports,
    an entry is imported when looked up."""

    def __getitem__(self, name: str) -> RankerEntry:
        if name not in _TABLE:
            raise KeyError(name)
        return _resolve(name)

    def __contains__(self, name: object) -> bool:
        return name in _TABLE

    def __iter__(self) -> Iterator[str]:
        return iter(_TABLE)

    def __len__(self) -> int:
        return len(_TABLE)

    def __repr__(self) -> str:
        return f"RANKERS({', '.join(_TABLE)})"


RANKERS: Mapping[str, RankerEntry] = _Registry()
"""Every ranker :func:`make_ranker` builds: name -> ``(factory, config model)``."""


def _unknown(name: str) -> str:
    return f"ranker {name!r} is not known; allowed: {', '.join(sorted(RANKERS))}"


def known_ranker(value: str) -> str:
    """``value`` if it names a registered ranker (imports none).

    Raises:
        ValueError: Unknown name (for pydantic validators), listing the allowed ones.
    """
    if value not in RANKERS:
        raise ValueError(_unknown(value))
    return value


def make_ranker(name: str, config: dict[str, Any] | BaseModel | None = None) -> Ranker:
    """Build a ranker by name with its config (a dict is validated by the config model).

    Raises:
        ConfigError: Unknown name or invalid config.
    """
    if name not in RANKERS:
        raise ConfigError(_unknown(name))
    factory, config_cls = RANKERS[name]
    if isinstance(config, BaseModel) and not isinstance(config, config_cls):
        raise ConfigError(f"ranker {name!r} takes a {config_cls.__name__}, got {type(config)}")
    try:
        validated = config_cls.model_validate(config or {})
        ranker: Ranker = factory(validated)
        ranker.spec = (name, validated.model_dump(mode="json"))
        return ranker
    except ValidationError as exc:
        allowed = ", ".join(config_cls.model_fields) or "none"
        raise ConfigError(
            f"invalid config for ranker {name!r}: {describe_validation_error(exc)} "
            f"(allowed keys: {allowed})"
        ) from exc
