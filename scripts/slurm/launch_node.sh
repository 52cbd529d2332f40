#!/bin/bash
# Per-node part of scripts/slurm/dmpo.sbatch: start `accelerate launch` for this node's GPUs.
# Reads: DMPO_RECIPE, DMPO_ACCELERATE_CONFIG (name or path), GPUS_PER_NODE, MASTER_ADDR, MASTER_PORT,
#        SLURM_NNODES (number of nodes) and SLURM_PROCID (this node's rank; one task per node).
# Extra arguments are recipe flags (they override the recipe). DMPO_DRY_RUN=1 prints the command instead.
set -euo pipefail
: "${DMPO_RECIPE:?}" "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${SLURM_NNODES:?}" "${SLURM_PROCID:?}"
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PYTHON=${PYTHON:-python}
NUM_PROCESSES=$(( SLURM_NNODES * GPUS_PER_NODE ))
DRY=()
if [ "${DMPO_DRY_RUN:-0}" = "1" ]; then DRY=(--dry-run); fi

exec "$PYTHON" -m dmpo_trl.cli train "${DRY[@]}" \
    --accelerate-config "${DMPO_ACCELERATE_CONFIG:-zero3}" \
    --num-processes "$NUM_PROCESSES" \
    --num-machines "$SLURM_NNODES" \
    --machine-rank "$SLURM_PROCID" \
    --main-process-ip "$MASTER_ADDR" \
    --main-process-port "$MASTER_PORT" \
    --config "$DMPO_RECIPE" \
    --resume_from_checkpoint auto \
    "$@"
