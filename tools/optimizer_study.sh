#!/usr/bin/env bash
# Optimizer study (issue 7): AdamW-only against hybrid Muon + AdamW at several learning rates,
# every run with the same model, data, seed, batch layout and step count; then `trainer compare`
# turns the run directories into OUT/compare/{summary.md,summary.json,val_loss_vs_tokens*.png}.
#
# Usage: tools/optimizer_study.sh TRAINER DATA OUT MODEL STEPS MICRO_BATCH GRAD_ACCUM [EXTRA TRAIN FLAGS...]
#   e.g. tools/optimizer_study.sh target/release/trainer data runs/study-130m 130m 2000 16 2 --warmup 100
#
# Runs go sequentially into OUT/<label> (labels: adamw-lr3e-4, hybrid-m1e-3-a1e-4, ...). The
# script can be stopped (Ctrl-C or SIGTERM: the running trainer finishes its step, saves a
# checkpoint and the script exits) and started again with the same arguments: a run whose final
# checkpoint OUT/<label>/ckpt-<STEPS>/ exists is skipped, one with an earlier checkpoint is
# resumed (--resume), a run that failed (e.g. diverged: OUT/<label>/FAILED) is skipped unless
# RETRY_FAILED=1. Every command run is appended to OUT/commands.log, each run's output to
# OUT/<label>/train.log. Exit status: 0 when every run finished, 1 when some failed (the
# comparison is still written, from the runs that evaluated at least once), 130 when stopped.
#
# Environment (the grid; defaults = issue 7's grid):
#   ADAMW_LRS         AdamW-only peak learning rates                 ["3e-4 1e-3 3e-3"]
#   SEED_POINTS       hybrid runs at the seed recipe, as MUON:ADAMW  ["1e-3:1e-4"]
#   MUON_LRS          hybrid sweep: Muon peak learning rates         ["5e-4 2e-3 4e-3"]
#   HYBRID_ADAMW_LRS  hybrid sweep: AdamW peak learning rates        ["1e-4 3e-4 1e-3"]
# Other settings:
#   DEVICE [cpu]  DTYPE [f32]  SEED [0]  EVAL_EVERY [STEPS/20, at least 1]  EVAL_CHUNKS [64]
#   SAVE_EVERY [STEPS/10, at least 1]  TITLE [optimizer study: MODEL, STEPS steps]
#   RETRY_FAILED=1 reruns failed runs;  DRY_RUN=1 prints the commands without running anything;
#   COMPARE=0 skips the comparison (several instances sharing OUT, each with its own grid point:
#   tools/gpu_queue.sh; run `trainer compare` once at the end).
set -uo pipefail

ADAMW_LRS=${ADAMW_LRS-"3e-4 1e-3 3e-3"}
SEED_POINTS=${SEED_POINTS-"1e-3:1e-4"}
MUON_LRS=${MUON_LRS-"5e-4 2e-3 4e-3"}
HYBRID_ADAMW_LRS=${HYBRID_ADAMW_LRS-"1e-4 3e-4 1e-3"}

if [ $# -lt 7 ]; then
  sed -n '2,28p' "$0" >&2
  exit 2
fi
TRAINER=$1 DATA=$2 OUT=$3 MODEL=$4 STEPS=$5 MICRO_BATCH=$6 GRAD_ACCUM=$7
shift 7
EXTRA=("$@")
DEVICE=${DEVICE:-cpu} DTYPE=${DTYPE:-f32} SEED=${SEED:-0} EVAL_CHUNKS=${EVAL_CHUNKS:-64}
EVAL_EVERY=${EVAL_EVERY:-$(( STEPS / 20 > 0 ? STEPS / 20 : 1 ))}
SAVE_EVERY=${SAVE_EVERY:-$(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))}
TITLE=${TITLE:-"optimizer study: $MODEL, $STEPS steps"}

# ---- the grid: label optimizer muon_lr adamw_lr, one run per line ------------------------------
grid=()
for a in $ADAMW_LRS; do grid+=("adamw-lr$a adamw - $a"); done
for p in $SEED_POINTS; do grid+=("hybrid-m${p%%:*}-a${p##*:} hybrid ${p%%:*} ${p##*:}"); done
for m in $MUON_LRS; do
  for a in $HYBRID_ADAMW_LRS; do grid+=("hybrid-m$m-a$a hybrid $m $a"); done
done

# ---- stop cleanly on Ctrl-C / SIGTERM: the trainer saves a checkpoint, then we exit ------------
stop=0 child=
on_signal() {
  stop=1
  if [ -n "$child" ]; then kill -INT "$child" 2>/dev/null || true; fi
}
trap on_signal INT TERM

mkdir -p "$OUT"
final_ckpt=$(printf 'ckpt-%06d' "$STEPS")
failed=() seen=" "
for line in "${grid[@]}"; do
  read -r label optimizer muon_lr adamw_lr <<< "$line"
  case "$seen" in *" $label "*) continue ;; esac  # the same grid point listed twice
  seen+="$label "
  dir=$OUT/$label
  if [ -f "$dir/$final_ckpt/trainer_state.json" ]; then
    echo "== $label: done ($dir/$final_ckpt), skipped"
    continue
  fi
  if [ -f "$dir/FAILED" ] && [ "${RETRY_FAILED:-0}" != 1 ]; then
    echo "== $label: failed before ($(cat "$dir/FAILED")), skipped (RETRY_FAILED=1 reruns it)"
    failed+=("$label")
    continue
  fi
  cmd=("$TRAINER" train --data "$DATA" --out "$dir" --model "$MODEL" --steps "$STEPS"
       --micro-batch "$MICRO_BATCH" --grad-accum "$GRAD_ACCUM" --optimizer "$optimizer" --adamw-lr "$adamw_lr"
       --seed "$SEED" --device "$DEVICE" --dtype "$DTYPE" --eval-every "$EVAL_EVERY" --eval-chunks "$EVAL_CHUNKS"
       --save-every "$SAVE_EVERY")
  if [ "$muon_lr" != - ]; then cmd+=(--muon-lr "$muon_lr"); fi
  if compgen -G "$dir/ckpt-[0-9]*[0-9]" > /dev/null; then cmd+=(--resume); fi
  cmd+=("${EXTRA[@]}")
  echo "== $label: ${cmd[*]}"
  if [ "${DRY_RUN:-0}" = 1 ]; then continue; fi
  mkdir -p "$dir"
  rm -f "$dir/FAILED"
  echo "$(date -u +%FT%TZ) $(printf '%q ' "${cmd[@]}")" >> "$OUT/commands.log"
  # tee ignores the terminal's Ctrl-C so the trainer can still log its checkpoint through it.
  "${cmd[@]}" > >(trap '' INT TERM; exec tee -a "$dir/train.log") 2>&1 &
  child=$!
  wait "$child"; rc=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done  # a signal interrupted `wait`
  child=
  # A trainer stopped by a signal (ours, or its own) exits 0 without its final checkpoint.
  if [ "$stop" = 1 ] || { [ "$rc" = 0 ] && [ ! -f "$dir/$final_ckpt/trainer_state.json" ]; }; then
    echo "== stopped during $label (exit $rc); run the same command again to resume"
    exit 130
  fi
  if [ "$rc" != 0 ]; then
    echo "exit $rc at $(date -u +%FT%TZ), see train.log" > "$dir/FAILED"
    echo "== $label: FAILED (exit $rc), continuing with the next run"
    failed+=("$label")
  fi
done
if [ "${DRY_RUN:-0}" = 1 ]; then exit 0; fi
if [ "${COMPARE:-1}" = 0 ]; then
  if [ ${#failed[@]} -gt 0 ]; then exit 1; fi
  exit 0
fi

# ---- compare every run that evaluated at least once -------------------------------------------
runs=()
for line in "${grid[@]}"; do
  read -r label _ <<< "$line"
  dir=$OUT/$label
  case " ${runs[*]} " in *" $dir "*) continue ;; esac
  if grep -q '"kind":"eval"' "$dir/metrics.jsonl" 2>/dev/null; then runs+=("$dir"); fi
done
if [ ${#runs[@]} -eq 0 ]; then
  echo "no run has evaluated yet: nothing to compare" >&2
  exit 1
fi
compare=("$TRAINER" compare "${runs[@]}" --out "$OUT/compare" --title "$TITLE")
echo "$(date -u +%FT%TZ) $(printf '%q ' "${compare[@]}")" >> "$OUT/commands.log"
"${compare[@]}" || exit 1
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed runs (see OUT/<label>/train.log): ${failed[*]}" >&2
  exit 1
fi
