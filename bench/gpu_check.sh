#!/usr/bin/env bash
# The GPU check (README "Performance"): on a machine with one CUDA GPU, run the full profile of
# notebooks 08 (captioning, both models) and 09 (medical imaging) with their results records, then
# `make bench`, which on CUDA also measures bf16 and fused AdamW. Everything it produces goes to
# $OUT (default build/gpu_check): nvidia-smi, one log per notebook, the executed notebooks,
# build/bench.json and the results records it wrote under mmcourse/results/ (commit those).
#
#   bash bench/gpu_check.sh                  # needs the data in MMCOURSE_DATA_DIR and ~40 min on an H100-class GPU
#   TIMEOUT=3600 OUT=/tmp/gpu bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu_check}
TIMEOUT=${TIMEOUT:-5400}  # seconds per notebook
mkdir -p "$OUT"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" || log "nvidia-smi not found"
make env models
.venv/bin/python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device (see README 'GPU notes'); this script is for a GPU machine")
print("CUDA device:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
PY
[ -n "${MMCOURSE_DATA_DIR:-}" ] || log "MMCOURSE_DATA_DIR is not set: the notebooks fall back to synthetic data (not a result)"

start=$(date +%s)
for nb in 08_image_captioning 09_medical_imaging; do
  log "full profile of $nb (limit ${TIMEOUT} s)"
  .venv/bin/python -m mmcourse run "$nb" --profile full --record --timeout "$TIMEOUT" --build "$OUT/build" \
    2>&1 | tee "$OUT/$nb.log" || log "$nb did not finish: see $OUT/$nb.log"
done
log "make bench at the notebooks' sizes"
make bench BENCH_ARGS= 2>&1 | tee "$OUT/bench.log"
cp build/bench.json "$OUT/bench.json"
git status --short mmcourse/results > "$OUT/records_changed.txt" || true
log "done in $(( $(date +%s) - start )) s; results records changed: $(wc -l < "$OUT/records_changed.txt")"
