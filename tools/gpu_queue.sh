#!/usr/bin/env bash
# Run a list of resumable jobs on the GPUs of one machine, one job per GPU at a time, until the
# list is done or a deadline comes. Made for the optimizer study on a 4-GPU machine whose commands
# may run at most ~10 minutes: run the same queue again and it picks up where it stopped.
#
# Usage: tools/gpu_queue.sh JOBS_FILE NUM_GPUS DEADLINE_SECONDS LOG_DIR
#
# JOBS_FILE: one shell command per line (blank lines and lines starting with # are skipped), in
# the order to start them (put the longest first). Each command must be resumable: finish at once
# when its work is already done, continue from its last checkpoint otherwise (the trainer's
# --resume, or tools/optimizer_study.sh, which does both). Worker g runs its jobs with
# CUDA_VISIBLE_DEVICES=g, so a job uses `--device cuda:0`.
#
# At DEADLINE_SECONDS after the start every running job gets SIGTERM (the trainer finishes its
# step, saves a checkpoint and exits); a job is not started with less than MIN_START_S [60]
# seconds left. Each job's output goes to LOG_DIR/job-NN.log, a line per start and end to
# LOG_DIR/queue.log. Exit status: 0 when every job ran to the end with status 0 in this call,
# 1 otherwise (some stopped by the deadline, not started, or failed: see queue.log).
set -uo pipefail

if [ $# -ne 4 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
JOBS_FILE=$1 NUM_GPUS=$2 DEADLINE_S=$3 LOG_DIR=$4
MIN_START_S=${MIN_START_S:-60}
mkdir -p "$LOG_DIR"
mapfile -t jobs < <(grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' "$JOBS_FILE")
claims=$(mktemp -d)
t0=$(date +%s)
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$LOG_DIR/queue.log"; }

# A worker claims the next unclaimed job (mkdir is atomic), runs it on its GPU under the
# deadline, and records the outcome as a file in the claims directory.
worker() {
  local gpu=$1 j left rc
  for j in "${!jobs[@]}"; do
    mkdir "$claims/$j" 2>/dev/null || continue
    left=$(( DEADLINE_S - ($(date +%s) - t0) ))
    if [ "$left" -lt "$MIN_START_S" ]; then
      echo "not started" > "$claims/$j/outcome"
      log "gpu $gpu: job $j not started ($left s left)"
      continue
    fi
    log "gpu $gpu: job $j start ($left s left): ${jobs[$j]}"
    CUDA_VISIBLE_DEVICES=$gpu timeout -s TERM -k 120 "$left" bash -c "${jobs[$j]}" \
      > "$(printf '%s/job-%02d.log' "$LOG_DIR" "$j")" 2>&1
    rc=$?
    echo "exit $rc" > "$claims/$j/outcome"
    log "gpu $gpu: job $j end, exit $rc"
  done
}

for ((g = 0; g < NUM_GPUS; g++)); do worker "$g" & done
wait

status=0
for j in "${!jobs[@]}"; do
  outcome=$(cat "$claims/$j/outcome" 2>/dev/null || echo "no outcome")
  [ "$outcome" = "exit 0" ] || status=1
  printf 'job %02d: %s\n' "$j" "$outcome" | tee -a "$LOG_DIR/queue.log"
done
rm -rf "$claims"
exit "$status"
