#!/usr/bin/env bash
# Reproduces the shipped toy-world model end to end on CPU (see docs/toyworld.md):
# data, stage 1 (image model), stage 2 (SimDA adapters, `simda train`), evaluation, shipping.
#   bash scripts/train_toyworld.sh [RUN_DIR]          (default runs/toyworld)
# It runs $SIMDA, else .venv/bin/simda, else the simda on PATH.
# Model v2 (shipped) took about 3.3 hours on 2 CPU cores: stage 1 58 minutes, stage 2 8,000
# steps at 1.0-1.1 s each (docs/toyworld.md). Every stage is skipped when its output already exists, and
# stage 2 resumes from its last checkpoint, so an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/toyworld}
# the simda command: $SIMDA if set, else the checkout's .venv (make demo / make test), else PATH
if [ -z "${SIMDA:-}" ]; then
  if [ -x .venv/bin/simda ]; then SIMDA=.venv/bin/simda
  elif command -v simda >/dev/null; then SIMDA=simda
  else
    echo "train_toyworld.sh: no simda command: run 'make demo' (sets up .venv), install the" \
      "package (pip install .), or set SIMDA=/path/to/simda" >&2
    exit 2
  fi
fi
mkdir -p "$RUN"
# a long job on a machine of its own: spinning OpenMP threads make stage 2 about 40 % faster
# than simda's default passive wait (docs/cpu.md); set OMP_WAIT_POLICY=PASSIVE to share the cores
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}

[ -d "$RUN/data" ] || $SIMDA toyworld data --clips 2048 --seed 1 --output "$RUN/data"

[ -f "$RUN/base/model_index.json" ] || $SIMDA toyworld base --steps 2000 --batch-size 64 \
  --lr 1e-3 --seed 0 --device cpu --output "$RUN/base"

resume=()
[ -f "$RUN/stage2/checkpoint/state.json" ] && resume=(--resume)
[ -f "$RUN/model/model_index.json" ] || $SIMDA train --model "$RUN/base" --data "$RUN/data" \
  --frames 8 --size 32 --steps 8000 --batch-size 8 --lr 1e-3 --caption-dropout 0.1 \
  --checkpoint-every 250 --no-checkpointing --device cpu --seed 0 --output "$RUN/stage2" \
  --save-pipeline "$RUN/model" "${resume[@]}"

$SIMDA eval-toyworld --model "$RUN/model" --seeds 4 --steps 25 --ablations \
  --device cpu --report "$RUN/eval.md"

if [ "${SHIP:-0}" = 1 ]; then
  $SIMDA toyworld ship --model "$RUN/model"
fi
