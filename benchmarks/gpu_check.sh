#!/usr/bin/env bash
# The GPU path, on a CUDA machine: dense against pruned models in fp32 and bf16, their speed over batch sizes and
# lengths and their forward split by part; the tests marked `gpu` (among them the tiny workflow's model jobs on the
# GPU, taking turns on one card). One summary file. (The card lease itself needs no GPU: tests/test_devices.py.)
#
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh [OUT_DIR]      (default OUT_DIR: benchmarks/gpu_check)
#
# MODELS: the models to time, "NAME=DIR ...", the first the reference (default: the default run's dense model and
# SKELETON's pruned ones). SHAPES_ONLY=1 times random weights in their shapes, for a machine that holds only their
# config.json and tokenizer files. CASES: "BATCHxLENGTH ..." to time. The Python must have torch with CUDA and this
# package's dependencies (pip install -e ".[test]").
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-benchmarks/gpu_check}
MODELS=${MODELS:-"dense=results/smollm2/model skeleton_sst2=results/smollm2/pruning/sst2/skeleton/model skeleton_imdb=results/smollm2/pruning/imdb/skeleton/model"}
CASES=${CASES:-"1x64 8x64 32x128 128x128 8x512"}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
status() { if [ "$1" -eq 0 ]; then echo "passed"; else echo "FAILED (exit $1)"; fi; }

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device', '| transformers', transformers.__version__)"
  echo
} > "$SUMMARY"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing to check" | tee -a "$SUMMARY"
  exit 1
fi

# Speed: pruned against dense, fp32 and bf16, over the cases.
model_args=(); for spec in $MODELS; do model_args+=(--model "$spec"); done
# shellcheck disable=SC2086
"$PYTHON" benchmarks/pruned_speed.py "$OUT/speed" "${model_args[@]}" --cases $CASES --dtypes float32 bfloat16 \
  --device cuda --threads 1 $([ "${SHAPES_ONLY:-0}" = 1 ] && echo --shapes-only) > "$OUT/speed.log" 2>&1
echo "- pruned against dense: $(status $?) ($OUT/speed/speed.md)" >> "$SUMMARY"
cat "$OUT/speed/speed.md" >> "$SUMMARY" 2>/dev/null

# What bounds the speedup: the forward split into FFN, attention, norms and the rest, at a small and a large batch.
if [ "${SHAPES_ONLY:-0}" = 1 ]; then
  model_args=(); for spec in $MODELS; do model_args+=(--model "${spec%%=*}=$OUT/speed/models/${spec%%=*}"); done
fi
for case in 8x64 128x128; do
  "$PYTHON" benchmarks/forward_profile.py "$OUT/profile_$case" "${model_args[@]}" --device cuda --threads 1 \
    --dtypes float32 bfloat16 --batch "${case%x*}" --length "${case#*x}" > "$OUT/profile_$case.log" 2>&1
  echo "- forward profile, batch x length $case: $(status $?)" >> "$SUMMARY"
  sed -n '/^Speedup/,$p' "$OUT/profile_$case/profile.md" >> "$SUMMARY" 2>/dev/null
done

# The tests marked gpu, the tiny workflow on the GPU among them (last: the longest).
"$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/gpu_tests.log" 2>&1
echo "- tests marked gpu: $(status $?) ($(tail -1 "$OUT/gpu_tests.log"))" >> "$SUMMARY"

cat "$SUMMARY"
