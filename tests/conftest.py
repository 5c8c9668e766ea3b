"""Shared fixtures: the MovieLens data in ../shared, read through one fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may reach a model hub at run time; implicit warns without this thread setting.
for _name, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "ratings.csv").is_file():
        message = f"shared dataset {path} is missing (CI needs ../shared beside the clone)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ml_small_path() -> Path:
    """The ml-latest-small folder from ../shared/data; fails under CI when missing."""
    return _shared_dataset("ml-latest-small")


@pytest.fixture(scope="session")
def ml_small(ml_small_path: Path):  # type: ignore[no-untyped-def]
    """ml-latest-small loaded once per session."""
    from ragrec.data import load_movielens

    return load_movielens(ml_small_path)


@pytest.fixture(scope="session")
def llamarec_data(ml_small):  # type: ignore[no-untyped-def]
    """ml-latest-small prepared by the llamarec protocol, once per session."""
    from ragrec.eval import llamarec_protocol

    return llamarec_protocol(ml_small.catalog, ml_small.interactions)
