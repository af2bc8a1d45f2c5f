#!/usr/bin/env bash
# Issue 7's optimizer study plus issue 4's 1,000-step proof run, as one resumable job queue over
# the GPUs of one machine (tools/gpu_queue.sh). Made for the rented 4-GPU machine whose commands
# last at most ~10 minutes: call it again with the same arguments until it reports every job done;
# finished runs are skipped, interrupted ones resume from their checkpoint.
#
# Usage: tools/study_gpus.sh TRAINER DATA RUNS NUM_GPUS DEADLINE_SECONDS [RESULTS_TAR]
#   TRAINER  a trainer built with --features cuda      DATA  shards of all of fineweb-mini
#   RUNS     where the run directories go; must survive between calls (on the rented GPU machine:
#            outside the repository copy, e.g. /tmp/studyruns, which each call replaces)
#   RESULTS_TAR  if given: metrics, logs and configs of every run (no checkpoints) packed there
#
# The runs (130m at seq 1024, bf16, effective batch 32 × 1024 tokens, seed 0, one data order):
#   RUNS/proof/hybrid-m1e-3-a1e-4   1,000 steps with the seed's defaults (issue 4)
#   RUNS/study-130m/<label>         300 steps (9.8M tokens), warmup 30: AdamW-only at 3 learning
#                                   rates, hybrid at the seed's point and a Muon × AdamW sweep
#   RUNS/study-31m/<label>          the same budget for the 31m model (d_model 384, 12 layers)
# Evaluation on the whole val split (190 chunks) every 25 steps (every 50 for the proof run).
set -uo pipefail

if [ $# -lt 5 ]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
TRAINER=$1 DATA=$2 RUNS=$3 NUM_GPUS=$4 DEADLINE_S=$5 RESULTS_TAR=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
study=$here/optimizer_study.sh
mkdir -p "$RUNS"

# One job = one grid point of tools/optimizer_study.sh (skips finished runs, resumes the rest).
# point MODEL STEPS OUT EVAL_EVERY ADAMW_LRS SEED_POINTS MUON_LRS HYBRID_ADAMW_LRS [EXTRA...]
point() {
  local model=$1 steps=$2 out=$3 every=$4 adamw=$5 seeds=$6 muon=$7 hadamw=$8
  shift 8
  printf 'COMPARE=0 DEVICE=cuda:0 DTYPE=bf16 SEED=0 EVAL_CHUNKS=190 EVAL_EVERY=%s SAVE_EVERY=100 ' "$every"
  printf 'ADAMW_LRS=%q SEED_POINTS=%q MUON_LRS=%q HYBRID_ADAMW_LRS=%q ' "$adamw" "$seeds" "$muon" "$hadamw"
  printf '%q ' "$study" "$TRAINER" "$DATA" "$out" "$model" "$steps" 32 1 "$@"
  echo
}
study_run() { # MODEL OPTIMIZER MUON_LR ADAMW_LR
  local out=$RUNS/study-$1
  if [ "$2" = adamw ]; then point "$1" 300 "$out" 25 "$4" "" "" "" --warmup 30
  else point "$1" 300 "$out" 25 "" "$3:$4" "" "" --warmup 30; fi
}

jobs=$RUNS/jobs.txt
{
  echo "# longest first: the proof run, then the 130m study (most important first), then 31m"
  point 130m 1000 "$RUNS/proof" 50 "" "1e-3:1e-4" "" ""
  for a in 3e-4 1e-3 3e-3; do study_run 130m adamw - "$a"; done
  for ma in 1e-3:1e-4 3e-3:1e-3 3e-3:1e-4 1e-2:1e-3 1e-3:1e-3 1e-2:1e-4 3e-3:3e-4 3e-3:3e-3; do
    study_run 130m hybrid "${ma%%:*}" "${ma##*:}"
  done
  for a in 1e-3 3e-3 1e-2; do study_run 31m adamw - "$a"; done
  for ma in 1e-3:1e-4 3e-3:1e-3 1e-2:3e-3 1e-2:1e-2 3e-3:3e-3 3e-2:3e-3 1e-2:1e-3; do
    study_run 31m hybrid "${ma%%:*}" "${ma##*:}"
  done
} > "$jobs"

"$here/gpu_queue.sh" "$jobs" "$NUM_GPUS" "$DEADLINE_S" "$RUNS/queue-logs"
status=$?

if [ -n "$RESULTS_TAR" ]; then
  (cd "$RUNS" && find . \( -name 'ckpt-*' -prune \) -o -type f -print | tar -czf "$RESULTS_TAR" -T -)
fi
exit "$status"
