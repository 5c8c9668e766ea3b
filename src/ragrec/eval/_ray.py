"""Scoring an evaluation on Ray: a pool of actors, one fitted ranker (one model) each.

The driver fits (and tunes) the ranker as for a local run; each actor rebuilds the same
ranker from its :attr:`~ragrec.eval.Ranker.spec`, fits it on the same rows and loads the
driver's :meth:`~ragrec.eval.Ranker.tuned_state`, then scores the batches it is handed.
Per-user results come back to the driver, which writes them (so resuming works the same
as locally) and computes the metrics.

Without an ``address`` (option or ``RAY_ADDRESS``) a local Ray instance is started with
``workers`` CPUs and shut down afterwards; with one, the run joins that cluster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ragrec.errors import ConfigError
from ragrec.eval._cases import EvalCases, ProtocolData, Split
from ragrec.eval._rankers import Ranker
from ragrec.eval._registry import make_ranker

logger = logging.getLogger(__name__)

__all__ = ["RAY_OPTIONS", "score_on_ray"]

#: Keys allowed in ``engine_options`` (``--engine-option KEY=VALUE``).
RAY_OPTIONS = ("address", "workers", "cpus_per_worker", "gpus_per_worker")


class _Worker:
    """One ranker on one Ray worker process."""

    def __init__(
        self,
        spec: tuple[str, dict[str, Any]],
        data: ProtocolData,
        split: Split,
        tuned: dict[str, Any],
        top_k: int,
    ) -> None:
        name, config = spec
        self.ranker = make_ranker(name, config)
        self.ranker.fit(data.catalog, data.fit_rows(split))
        self.ranker.load_tuned_state(tuned)
        self.n_items = len(data.catalog)
        self.top_k = top_k

    def score(self, cases: EvalCases, rows: np.ndarray) -> Any:
        from ragrec.eval._runner import score_batch

        return score_batch(self.ranker, cases, rows, self.n_items, self.top_k)


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise ConfigError(
            f"engine option(s) {unknown} are not known for the ray engine; "
            f"allowed: {', '.join(RAY_OPTIONS)}"
        )
    out: dict[str, Any] = {
        "address": options.get("address") or os.environ.get("RAY_ADDRESS") or None,
        "workers": options.get("workers", 2),
        "cpus_per_worker": options.get("cpus_per_worker", 1),
        "gpus_per_worker": options.get("gpus_per_worker", 0),
    }
    for key in ("workers", "cpus_per_worker", "gpus_per_worker"):
        try:
            value = float(out[key])
        except (TypeError, ValueError):
            raise ConfigError(
                f"engine option {key}={out[key]!r} is not a number; e.g. {key}=2"
            ) from None
        if value < 0 or (key == "workers" and value < 1):
            raise ConfigError(f"engine option {key}={out[key]!r} must be >= 1 (workers) or >= 0")
        out[key] = int(value) if key == "workers" else value
    return out


def score_on_ray(
    ranker: Ranker,
    data: ProtocolData,
    split: Split,
    cases: EvalCases,
    batches: Sequence[np.ndarray],
    *,
    top_k: int,
    options: Mapping[str, Any],
) -> Iterator[Any]:
    """Yield each batch's output (``score_batch``'s) as Ray actors finish them.

    Raises:
        ConfigError: Ray is not installed, the ranker was not made by ``make_ranker``, or
            an engine option is invalid.
    """
    opts = _options(options)
    if ranker.spec is None:
        raise ConfigError(
            f"ranker {ranker.name!r} was not built by ragrec.eval.make_ranker(name, config), "
            "so Ray workers cannot rebuild it; build it with make_ranker to use engine='ray'"
        )
    if not batches:
        return
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise ConfigError(
            "engine='ray' needs Ray: pip install 'ragrec[ray]' (or use engine='local')"
        ) from exc
    started = False
    if not ray.is_initialized():
        if opts["address"]:
            ray.init(address=opts["address"], logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=max(int(opts["workers"] * opts["cpus_per_worker"]), 1),
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        started = True
    actors: list[Any] = []
    try:
        worker_cls = ray.remote(_Worker).options(
            num_cpus=opts["cpus_per_worker"], num_gpus=opts["gpus_per_worker"]
        )
        data_ref = ray.put(data)
        cases_ref = ray.put(cases)
        tuned = ranker.tuned_state()
        n_workers = min(opts["workers"], len(batches))
        actors = [
            worker_cls.remote(ranker.spec, data_ref, split, tuned, top_k) for _ in range(n_workers)
        ]
        pool = ActorPool(actors)
        logger.info("scoring %d batches on %d Ray actors", len(batches), n_workers)
        yield from pool.map_unordered(
            lambda actor, rows: actor.score.remote(cases_ref, rows), list(batches)
        )
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
