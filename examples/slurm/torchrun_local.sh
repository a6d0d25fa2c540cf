#!/bin/bash
# One node without Slurm:  bash examples/slurm/torchrun_local.sh examples/qwen3_4b_wmss.yaml [overrides...]
set -euo pipefail
RECIPE=${1:?usage: torchrun_local.sh RECIPE.yaml [overrides...]}
shift
exec torchrun --standalone --nproc_per_node="${GPUS:-8}" -m megatron_wmss.cli run --config "$RECIPE" "$@"
