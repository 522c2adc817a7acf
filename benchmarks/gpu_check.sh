#!/usr/bin/env bash
# The GPU check behind the GPU rows of docs/BENCHMARKS.md: one prepared script for a lent GPU machine
# (nothing is downloaded there; about 7 minutes on an H100). Run from the repository root:
#     bash benchmarks/gpu_check.sh            # logs go to $OUT (default /tmp)
# 1. the engine's tokens equal naive per-keypoint generate (small model, float32, 5 keypoints);
# 2. per-person latency, 17 keypoints x 20 answer tokens, paper size (DINOv2-L/14 + 7B Llama, random
#    weights, bf16): naive generate per keypoint, our engine (static shapes + CUDA graphs), the same
#    engine eager (`static=False`) and with the grammar;
# 3. where one call's time goes (benchmarks/decode_profile.py: phases and top kernels);
# 4. the embedded model's training step on the device (benchmarks/train_speed.py, as trained: bf16, 64 images);
# 5. evaluation throughput (people/s) of the runner at paper size, one unit at a time vs a batch that
#    fills the card.
# 6. In the wild (issue 21): the embedded model, 10 boxes x 17 keypoints, one object at a time vs one call.
# Expects transformers/peft wheels in .whl (the GPU image has transformers 5.17; we need >= 5.24).
# QUICK=1: no naive baseline at paper size (measured before: 16.7 s per person on an H200), no batch-1 run.
# Dry run on a CPU: PY=.venv/bin/python DEVICE=cpu SIZE=tiny QUICK=1 bash benchmarks/gpu_check.sh
set -uo pipefail
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; SIZE=${SIZE:-paper}; QUICK=${QUICK:-}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp}; mkdir -p "$OUT"
BATCH=${BATCH:-30}  # divides the 60 MP-100 queries: both batches have one shape (one static state, captured in the warm-up)
DTYPE=$([ "$DEVICE" = cpu ] && echo float32 || echo bfloat16)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
step() { echo "== $1 ($(date +%T))"; }

step "tokens: engine vs naive, small model, float32"
timeout 90 $PY -m benchmarks.decode_speed --size $([ "$SIZE" = tiny ] && echo tiny || echo small) --device $DEVICE \
    --dtype float32 --keypoints 5 --new-tokens 12 --repeats 1 --methods naive engine 2>&1 | tee "$OUT/tokens_small.log" | grep -v Warn

step "per person, $SIZE size, $DTYPE, 17 keypoints x 20 tokens"
METHODS=$([ -n "$QUICK" ] && echo "engine eager grammar" || echo "naive engine eager grammar")
timeout 240 $PY -m benchmarks.decode_speed --size $SIZE --device $DEVICE --dtype $DTYPE --keypoints 17 \
    --new-tokens 20 --repeats 3 --methods $METHODS 2>&1 | tee "$OUT/decode_paper.log" | grep -v Warn

step "where a call's time goes, $SIZE size, $DTYPE (prefill, suffix block, per step, the graph replay alone)"
timeout 120 $PY -m benchmarks.decode_profile --size $SIZE --device $DEVICE --dtype $DTYPE --keypoints 17 \
    --new-tokens 20 2>&1 | tee "$OUT/profile_paper.log" | grep -v "Warn\|USDT"

step "training step of the embedded model (64 images, as trained): the device's share of a step"
timeout 90 $PY -m benchmarks.train_speed --config configs/keypointworld_continue.yaml --device $DEVICE --repeats 3 --profile \
    $([ "$DEVICE" = cpu ] && echo "--images 2" || echo "--images 64 --bf16") 2>&1 | tee "$OUT/train_step.log" | grep -v "Warn\|USDT\|Loading"

# COCO instances need xtcocotools for OKS AP (no wheel for that machine's python; it cannot download):
# MP-100 1-shot episodes otherwise
WORKLOADS=$($PY -c "import xtcocotools" 2>/dev/null && echo "coco mp100" || echo mp100)
step "evaluation throughput, $SIZE size, $DTYPE, batch 1 vs $BATCH ($WORKLOADS)"
timeout 150 $PY -m benchmarks.eval_speed --size $SIZE --device $DEVICE --dtype $DTYPE --workloads $WORKLOADS \
    --limit 64 --episodes 4 --batch "$BATCH" --max-new-tokens 20 ${QUICK:+--skip-one} 2>&1 | tee "$OUT/eval_paper.log" | grep -v Warn
step "In the wild: 10 boxes x 17 keypoints, embedded model, float32, one object at a time vs one call"
timeout 90 $PY -m benchmarks.wild_speed --device $DEVICE --repeats 5 2>&1 | tee "$OUT/wild.log" | grep -v "Warn\|Loading"
$PY -c "import torch; print('visible GPUs', torch.cuda.device_count())"
