#!/usr/bin/env bash
# Check simda on a GPU machine in one run: build the CUDA extension, run the GPU tests, the
# kernel benchmarks and the benchmark suite, and print short tables; full results go to $OUT
# (default out/gpu).
#   bash scripts/gpu_check.sh [STAGE ...]     # STAGES default to all:
#        build tests lsa adapter suite        # (suite = pytest benchmarks/, about 6 minutes)
#   stage `tune` (not a default) sweeps the attention kernels' launch configs (3-5 minutes)
# An offline machine can take wheels from .whl/ (installed into /tmp/site, e.g. diffusers and
# requests for the suite). The extension is built for this card's architecture unless
# TORCH_CUDA_ARCH_LIST says otherwise. Times on an H100/H200: build ~40 s; GPU tests ~1.5 min
# (about 150 Triton compilations, ~1 s each in 16 bits and ~3.5 s in fp32, on one CPU core
# with triton 3.6, plus two Inductor compiles, run in five processes side by side); 12
# attention rows of ~6 s; 14 adapter rows (fp16, bf16) of ~10 s, each compiling its
# torch.compile column afresh. `build tests lsa adapter` takes about 6 minutes. Stages print
# rows as they are measured. BUDGET (seconds, default 3600) bounds the whole run: each stage's
# timeout is cut to what is left, and a stage with under 30 s left is skipped, so a run under
# an outer time limit ends with the results of the stages it finished (e.g. BUDGET=420
# within a 450 s limit).
set -uo pipefail
# Compiled Triton kernels, never the interpreter (the tests' default without a GPU).
export TRITON_INTERPRET=0
OUT=${OUT:-out/gpu}
BUDGET=${BUDGET:-3600}
mkdir -p "$OUT"
stages=${*:-build tests lsa adapter suite}
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }
want() { [[ " $stages " == *" $1 "* ]]; }
# Seconds a stage may run: its own cap ($1) or what is left of BUDGET less a reserve for later
# stages ($2, default 0), whichever is smaller. (At least 1: `timeout 0` would mean no limit.)
limit() {
  local left=$(( BUDGET - ($(date +%s) - start) - 5 - ${2:-0} ))
  left=$(( left < $1 ? left : $1 )); echo $(( left < 1 ? 1 : left ))
}
fits() { (( $(limit 30) >= 30 )) || { echo "== skip $1: under 30 s of BUDGET left"; false; }; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import numpy, torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)" \
  | tee -a "$OUT/card.txt"

if want build; then
  step "build the CUDA extension"
  arch=${TORCH_CUDA_ARCH_LIST:-$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
  echo "TORCH_CUDA_ARCH_LIST=$arch"
  SIMDA_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=$arch python3 -m pip install -q --no-build-isolation --no-deps \
    -e . > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; echo "BUILD FAILED"; }
  python3 -c "import simda_kernels._C; print('simda_kernels._C loaded')" 2>&1 | tail -2
fi
# Versions, the card, the extension's state and what backend="auto" picks (a few seconds).
if python3 -c "import sys; from simda.cli import main; sys.exit(main(['env']))" > "$OUT/env.txt" 2>&1
then grep -E '^(CUDA extension|GPU|  backend)' "$OUT/env.txt"; else tail -3 "$OUT/env.txt"; fi
if want tests && fits tests; then
  step "GPU tests (processes side by side)"
  # One process per group: a CUDA fault in one cannot fail the others' tests, and the Triton
  # compilations (most of the time) run in parallel. timeout sends SIGINT first, so that pytest
  # still prints which tests failed (-rfE) when it is cut short.
  t=$(limit 400)
  gpu_tests() {
    local name=$1; shift
    timeout -s INT -k 20 "$t" python3 -m pytest -q -rfE -m gpu -p no:cacheprovider "$@" \
      > "$OUT/gpu_tests_$name.txt" 2>&1
  }
  gpu_tests adapter tests/test_temporal_adapter.py tests/test_selfcheck.py &
  gpu_tests lsa_fp32 tests/test_lsa_kernel.py -k "dtype2" &
  gpu_tests lsa_shapes tests/test_lsa_kernel.py -k "not dtype2 and test_gpu_shapes" &
  gpu_tests lsa_layouts tests/test_lsa_kernel.py -k "not dtype2 and test_gpu_layouts" &
  gpu_tests lsa_other tests/test_lsa_kernel.py \
    -k "not dtype2 and not test_gpu_shapes and not test_gpu_layouts" &
  gpu_tests lsa_flex tests/test_lsa_flex.py tests/test_lsa_backends.py &
  groups="adapter lsa_fp32 lsa_shapes lsa_layouts lsa_other lsa_flex"
  if python3 -c "import diffusers, transformers" > /dev/null 2>&1; then  # the model's GPU tests
    gpu_tests model tests/test_adapter_copies.py tests/test_diffusers_api.py &
    groups="$groups model"
  fi
  wait
  for name in $groups; do
    echo "-- $name: $(tail -1 "$OUT/gpu_tests_$name.txt")"
    grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests_$name.txt" | head -8
  done
fi
if want lsa && fits lsa; then
  step "latent-shift attention benchmark"
  # leaves the adapter benchmark at least 150 s when it is to run too
  timeout "$(limit 300 "$(want adapter && echo 150 || echo 0)")" python3 -m benchmarks.bench_lsa --json "$OUT/lsa.json" > "$OUT/lsa.md" 2>&1
  cat "$OUT/lsa.md"
  sm=$(python3 -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))" 2>/dev/null)
  [[ -n "$sm" ]] && echo "(backend='auto' follows it once committed as simda_kernels/measured/lsa-sm$sm.json)"
fi
if want adapter && fits adapter; then
  step "temporal adapter benchmark"
  timeout "$(limit 300)" python3 -m benchmarks.bench_adapter --json "$OUT/adapter.json" > "$OUT/adapter.md" 2>&1
  cat "$OUT/adapter.md"
fi
if want tune && fits tune; then  # not a default stage: a launch-config sweep, 3-5 minutes
  step "launch-config sweep of the attention kernels (fp16, quick grid)"
  timeout "$(limit 420)" python3 scripts/tune_lsa.py --dtype fp16 --grid quick --json "$OUT/tune.json" \
    > "$OUT/tune.md" 2>&1
  cat "$OUT/tune.md"
fi
if want suite && ! python3 -c "import diffusers" > "$OUT/diffusers.txt" 2>&1; then
  echo "== skip suite: diffusers does not import ($(tail -1 "$OUT/diffusers.txt"));"
  echo "   install it (pip install diffusers), or put its wheels and requests' in .whl/"
elif want suite && fits suite; then
  step "benchmark suite vs Tune-A-Video and LVDM"
  timeout "$(limit 420)" python3 -m pytest -q -p no:cacheprovider \
    benchmarks/ --benchmark --benchmark-min-rounds 3 --benchmark-json "$OUT/bench.json" > "$OUT/suite.txt" 2>&1
  tail -3 "$OUT/suite.txt"
  python3 -m simda.cli bench "$OUT/bench.json" --output "$OUT/report" | head -60
fi
step "done"
