"""Fixtures of the service tests: one tiny store per session, copied per use."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ._support import build_tiny_store


@pytest.fixture(scope="session")
def tiny_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny store built once per session; tests copy it."""
    return build_tiny_store(tmp_path_factory.mktemp("serve") / "template")


@pytest.fixture(scope="session")
def copy_store(
    tiny_store_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Path]:
    """``copy_store()``: a fresh copy of the tiny store."""

    def copy() -> Path:
        folder = tmp_path_factory.mktemp("store") / "store"
        shutil.copytree(tiny_store_template, folder)
        return folder

    return copy
