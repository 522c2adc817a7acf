#!/usr/bin/env bash
# One device-tool call for a lent GPU session (15 minutes in all, one command <= 600 s): continue the
# embedded model, then the quick GPU speed check (CUDA-graph engine vs eager at paper size).
#   run(command="TRAIN_BUDGET=300 bash evaluation/training/gpu_session.sh", carry=[".whl"], timeout_s=590)
# or in two calls, one longer cosine: TRAIN_BUDGET=480 SKIP_SPEED=1 ..., then SKIP_TRAIN=1 ... on the warm machine
# .whl holds the transformers 5.24 / peft 0.21 wheels (the GPU image has older ones; make it with
#   pip download --no-deps -d .whl transformers==5.24.0 peft==0.21.2); $OUT comes back with
# validate.json, train.log, speed.log and model.tar.part-* (the model, metrics.jsonl, run.json, loss.png).
# Time: ~20 s set-up + TRAIN_BUDGET + ~40 s held-out check and packing + SPEED_BUDGET (<= 280 s).
# Dry run on a CPU (checks the plumbing, not the numbers):
#   PY=.venv/bin/python DEVICE=cpu PRECISION=no WORKERS=1 IMAGES=4 TRAIN_BUDGET=20 OBJECTS=4 SIZE=tiny \
#     OUT=/tmp/session bash evaluation/training/gpu_session.sh
set -uo pipefail
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
start=$(date +%s)
if [ -z "${SKIP_TRAIN:-}" ]; then
    CONFIG=${CONFIG:-configs/keypointworld_continue.yaml} BUDGET=${TRAIN_BUDGET:-300} \
        bash evaluation/training/gpu_run.sh 2>&1 | grep -v "Loading\|Writing" | tee "$OUT/train.log" | tail -n 12
    echo "== training part: $(( $(date +%s) - start )) s"
fi
[ -n "${SKIP_SPEED:-}" ] && exit 0
# its per-step logs stay on the machine (speed.log has them all): the device tool returns at most 8 files
QUICK=1 OUT=/tmp/speed timeout "${SPEED_BUDGET:-280}" bash benchmarks/gpu_check.sh 2>&1 | tee "$OUT/speed.log" | grep -v "Warn"
echo "== total: $(( $(date +%s) - start )) s"
ls -la "$OUT"
