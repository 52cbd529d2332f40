#!/usr/bin/env bash
# The test command: installs everything into .venv (CPU torch 2.13.0), checks style (ruff, TRL's settings in
# pyproject.toml), then runs the test suite. Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Idle OpenMP threads sleep instead of spinning: several times faster on a shared CPU (see dmpo_trl/demo/main_job.py).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
