#!/usr/bin/env bash
# Long CPU training that keeps going: starts the run in OUT, or resumes it from OUT/checkpoint when there is
# one, and starts it again after a crash. The same command resumes after the machine or session stopped it.
#   nohup bash evaluation/training/cpu_run.sh runs/kw-cpu > runs/kw-cpu.log 2>&1 &
#   nohup bash evaluation/training/cpu_run.sh runs/det detector > runs/det.log 2>&1 &    # the box detector
#   CONFIG=configs/keypointworld_cpu.yaml (default; configs/detector_keypointworld_cpu.yaml for the detector);
#   NICE=5 (default) leaves the foreground responsive. Both take one thread (OMP_NUM_THREADS=1).
# It ends when the run finishes (its time budget spent) or is stopped with Ctrl-C / SIGINT (it saves first).
set -u
OUT=${1:-runs/kw-cpu}
WHAT=${2:-model}
case $WHAT in
  model) COMMAND=train; CONFIG=${CONFIG:-configs/keypointworld_cpu.yaml}; EXTRA=(--no-progress) ;;
  detector) COMMAND=train-detector; CONFIG=${CONFIG:-configs/detector_keypointworld_cpu.yaml}; EXTRA=() ;;
  *) echo "cpu_run: what to train is 'model' or 'detector', not '$WHAT'" >&2; exit 2 ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NICE=${NICE:-5}
cd "$(dirname "$0")/../.."
for attempt in $(seq 1 20); do
  nice -n "$NICE" python -m evaluation.cli "$COMMAND" --config "$CONFIG" --output "$OUT" --auto-resume "${EXTRA[@]}"
  rc=$?
  case $rc in
    0) echo "cpu_run: $OUT finished"; exit 0 ;;
    2) echo "cpu_run: $OUT: the command was refused (exit 2): not retrying" >&2; exit 2 ;;
  esac
  echo "cpu_run: $OUT stopped with exit $rc (attempt $attempt); resuming in 30 s" >&2
  sleep 30
done
exit 1
