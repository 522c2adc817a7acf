#!/usr/bin/env bash
# The benchmark of record for a KeypointWorld model: 60 held-out images of seed 424242 (and the same scenes
# off-centre), text / visual 1-shot / semantic, one `kptllm eval` record each.
#   bash evaluation/training/score_records.sh MODEL OUT [DATA]
#   bash evaluation/training/score_records.sh assets/kptllm-keypointworld results       # the shipped records
#   kptllm compare results/keypointworld-visual OUT/keypointworld-visual                # a candidate against them
# DATA (default /tmp/kw-held) holds the rendered files; they are made (deterministically) when missing.
set -euo pipefail
MODEL=${1:?model folder}; OUT=${2:?output folder}; DATA=${3:-/tmp/kw-held}
cd "$(dirname "$0")/../.."
kptllm=(python -m evaluation.cli)
[ -f "$DATA/annotations.json" ] || "${kptllm[@]}" synth --out "$DATA" --n 60 --seed 424242
[ -f "$DATA-off/annotations.json" ] || "${kptllm[@]}" synth --out "$DATA-off" --n 60 --seed 424242 --offcentre
for run in text visual semantic offcentre-text offcentre-visual; do
  task=${run#offcentre-}; data=$DATA; [ "$run" = "$task" ] || data=$DATA-off
  shots=(); [ "$task" = visual ] && shots=(--shots 1)
  "${kptllm[@]}" eval --model "$MODEL" --benchmark keypointworld --task "$task" "${shots[@]}" \
    --annotations "$data/annotations.json" --images "$data/images" --out "$OUT/keypointworld-$run"
done
