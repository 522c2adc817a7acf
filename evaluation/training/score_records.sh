#!/usr/bin/env bash
# A model's KeypointWorld records in one command: the decision records and the test set (six `kptllm eval`
# records each: text, visual 1-shot, semantic, plain and off-centre), each with its 95 % interval, overall
# and per category. The sets are defined in evaluation/data/keypointworld_sets.py; the work is done by
# evaluation/training/score_records.py (its docstring says more).
#   bash evaluation/training/score_records.sh assets/kptllm-keypointworld results                  # the shipped records
#   bash evaluation/training/score_records.sh runs/kw-cpu/best OUT --sets decision                 # a candidate
#   kptllm compare results/decision/keypointworld-visual OUT/decision/keypointworld-visual         # decide
# Paths are relative to the repository root. DATA (a third argument or --data, default /tmp/kw-sets) holds the
# rendered files; they are made (deterministically) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m evaluation.training.score_records "$@"
