#!/usr/bin/env bash
# The GPU path, on a CUDA machine: the tests marked `gpu`, the quick config end to end on the GPU, the speed
# benchmark (dense vs pruned, fp32 and bf16), the forward split by part, and two GPU jobs leasing one card. One summary file.
#
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh [OUT_DIR]      (default OUT_DIR: benchmarks/gpu_check)
#
# The Python must have torch with CUDA and this package installed (pip install -e ".[test]").
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-benchmarks/gpu_check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
status() { if [ "$1" -eq 0 ]; then echo "passed"; else echo "FAILED (exit $1)"; fi; }

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  "$PYTHON" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} > "$SUMMARY"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing to check" | tee -a "$SUMMARY"
  exit 1
fi

"$PYTHON" -m pytest -m gpu -q tests > "$OUT/gpu_tests.log" 2>&1
echo "- tests marked gpu: $(status $?) ($(tail -1 "$OUT/gpu_tests.log"))" >> "$SUMMARY"

# The quick config on the GPU: two jobs may run at once but there is one card, so they take turns through the lease.
RESULTS="$OUT/results"
start=$(date +%s)
"$PYTHON" -m snakemake --cores 4 --resources gpu=1 --configfile config/quick.yaml \
  --config results="$RESULTS" device=auto gpus_per_job=1 > "$OUT/quick.log" 2>&1
code=$?
echo "- quick config end to end on the GPU: $(status $code) in $(( $(date +%s) - start )) s" >> "$SUMMARY"
grep -h "leased GPU\|running on the CPU" "$RESULTS"/logs/*/tune_prompt/*/*.log 2>/dev/null | sort | uniq -c \
  | sed 's/^/  - /' >> "$SUMMARY"

# Two GPU jobs at once with --resources gpu=2 on one card would both lease it: the lease must refuse the second.
"$PYTHON" - >> "$SUMMARY" 2>&1 <<'PY'
import multiprocessing as mp, tempfile
from pathlib import Path
from skill_neurons.devices import lease_gpu

def take(lock_dir, queue):
    queue.put(lease_gpu(["0"], Path(lock_dir), timeout_s=2.0, poll_s=0.1))

lock_dir = tempfile.mkdtemp()
first = lease_gpu(["0"], Path(lock_dir), timeout_s=2.0)
queue = mp.get_context("spawn").Queue()
child = mp.get_context("spawn").Process(target=take, args=(lock_dir, queue))
child.start(); child.join()
print(f"- card lease: first job got GPU {first}; a second job on the same card "
      f"{'waited and gave up' if child.exitcode != 0 else 'got ' + str(queue.get())}")
PY

# Speed: the quick run's pruned models against dense, fp32 and bf16, on the GPU.
"$PYTHON" - >> "$SUMMARY" 2>&1 <<PY
import glob
import pandas as pd
for path in sorted(glob.glob("$RESULTS/*/pruning/*/speed.parquet")):
    table = pd.read_parquet(path)
    table = table[table["reference"]][["variant", "dtype", "batch", "length", "median_ms", "speedup"]]
    print(f"\n### {path}\n\n" + table.round(3).to_string(index=False))
PY
# What bounds the pruned speedup on the GPU: the forward split into FFN, attention, norms and the rest.
"$PYTHON" benchmarks/forward_profile.py "$OUT/profile" --device cuda --dtypes float32 bfloat16 \
  --model dense="$RESULTS/smollm2/model" --model skeleton="$RESULTS/smollm2/pruning/sst2/skeleton/model" \
  > "$OUT/profile.log" 2>&1
echo "- forward profile: $(status $?) ($OUT/profile/profile.md)" >> "$SUMMARY"
sed -n '/^Speedup/,$p' "$OUT/profile/profile.md" >> "$SUMMARY" 2>/dev/null

cat "$SUMMARY"
