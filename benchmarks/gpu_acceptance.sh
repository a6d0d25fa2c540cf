#!/usr/bin/env bash
# One-command GPU acceptance run on one H100/H200 node (target: < 8 minutes): TE layer spec in bf16 and
# FP8, `wmss run` (SFT, WD-DS, WD-JT, HF export) at TP=1 and TP=2 (with 2 GPUs), vLLM on 20 GSM8K
# problems, the bf16 mixed-loss benchmark, WD-JT tokens/s + MFU of a ~1B pair in bf16 and FP8.
# Writes <out>/report.json (default runs/gpu_acceptance); exit status 1 if any check failed.
#   bash benchmarks/gpu_acceptance.sh [--out DIR] [--only CHECK ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_acceptance.py "$@"
