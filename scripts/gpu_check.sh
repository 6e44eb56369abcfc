#!/usr/bin/env bash
# One script for a lent GPU (H100/H200): install what is missing, build the CUDA extension,
# run the GPU tests and benchmarks, print a short table. Full results go to $OUT (or out/gpu).
#   ../shared/gpu/prepare-wheels.sh   # on the CPU machine: wheels into .whl/
#   bash scripts/gpu_check.sh          # on the GPU machine (the device tool's `run`)
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/card.txt"

step "build the CUDA extension"
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python3 -m pip install -q --no-build-isolation --no-deps \
  -e . > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; echo "BUILD FAILED"; }
python3 -c "import simda_kernels._C" 2>&1 | tail -2

step "GPU tests"
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ > "$OUT/gpu_tests.txt" 2>&1
tail -3 "$OUT/gpu_tests.txt"
grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.txt" | head -20

step "latent-shift attention benchmark"
timeout 240 python3 -m benchmarks.bench_lsa --json "$OUT/lsa.json" > "$OUT/lsa.md" 2>&1
cat "$OUT/lsa.md"

step "temporal adapter benchmark"
timeout 240 python3 -m benchmarks.bench_adapter --json "$OUT/adapter.json" > "$OUT/adapter.md" 2>&1
cat "$OUT/adapter.md"

step "done"
