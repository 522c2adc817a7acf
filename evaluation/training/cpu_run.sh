#!/usr/bin/env bash
# Long CPU training that keeps going: starts the run in OUT, or resumes it from OUT/checkpoint when there is
# one, and starts it again after a crash. The same command resumes after the machine or session stopped it.
#   nohup bash evaluation/training/cpu_run.sh runs/kw-cpu > runs/kw-cpu.log 2>&1 &
#   CONFIG=configs/keypointworld_cpu.yaml (default); NICE=5 (default) leaves the foreground responsive.
# It ends when the run finishes (its time budget spent) or is stopped with Ctrl-C / SIGINT (it saves first).
set -u
OUT=${1:-runs/kw-cpu}
CONFIG=${CONFIG:-configs/keypointworld_cpu.yaml}
NICE=${NICE:-5}
cd "$(dirname "$0")/../.."
for attempt in $(seq 1 20); do
  nice -n "$NICE" python -m evaluation.cli train --config "$CONFIG" --output "$OUT" --auto-resume --no-progress
  rc=$?
  case $rc in
    0) echo "cpu_run: $OUT finished"; exit 0 ;;
    2) echo "cpu_run: $OUT: the command was refused (exit 2): not retrying" >&2; exit 2 ;;
  esac
  echo "cpu_run: $OUT stopped with exit $rc (attempt $attempt); resuming in 30 s" >&2
  sleep 30
done
exit 1
