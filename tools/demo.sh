#!/usr/bin/env bash
# The main job, offline, in one command: `pipeline` streams the sample corpus that ships in the
# repository (pipeline/assets/sample-corpus, FineWeb schema) into a ring of shards while
# `trainer train --follow` trains a small Mamba from it, validates, plots, checkpoints; then the
# checkpoint's val loss is printed and a sample generated. Ends by itself (the pipeline's
# --max-tokens ends both programs).
#
#   bash tools/demo.sh                 # CPU, or cuda:0 when the binaries can be built with CUDA
#   DEVICE=cpu bash tools/demo.sh      # force the CPU
#   DEVICE=cuda:0 bash tools/demo.sh   # force the GPU (builds with --features cuda)
#
# Builds the release binaries first when needed (`cargo build --release`: on a fresh machine the
# first build takes a while, ~10–20 minutes on 2 cores; later runs start at once). Writes only
# data/demo/ and runs/demo/ (both replaced on every run; override with DATA=… OUT=…).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/demo}
OUT=${OUT:-runs/demo}
SAMPLE=pipeline/assets/sample-corpus
# Train tokens the pipeline streams (the demo's length): 400 chunks of 257 tokens = 100 steps of
# 4 sequences of 256 tokens.
MAX_TOKENS=${MAX_TOKENS:-102800}
STEPS=${STEPS:-100}

# ---- device: a GPU when one is there and nvcc can build the CUDA kernels ----------------------
if [[ -z "${DEVICE:-}" ]]; then
  DEVICE=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU' && command -v nvcc >/dev/null 2>&1; then
    DEVICE=cuda:0
  fi
fi
FEATURES=()
DTYPE=f32
if [[ $DEVICE == cuda* ]]; then
  FEATURES=(--features cuda)
  DTYPE=bf16
fi

# ---- build (a no-op when up to date) -----------------------------------------------------------
command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
if [[ -z ${DEMO_BIN_DIR:-} && ( ! -x target/release/pipeline || ! -x target/release/trainer ) ]]; then
  echo "demo: building the release binaries (first time: this takes a while)"
fi
BIN=${DEMO_BIN_DIR:-target/release}   # DEMO_BIN_DIR=DIR: use the binaries in DIR, build nothing
if [[ -z ${DEMO_BIN_DIR:-} ]]; then
  cargo build --release --quiet -p mamba-pipeline -p mamba-trainer "${FEATURES[@]}"
fi
PIPELINE=$BIN/pipeline
TRAINER=$BIN/trainer

# ---- run both at once ----------------------------------------------------------------------------
rm -rf "$DATA"
echo "demo: pipeline $SAMPLE -> $DATA (ring of 4 shards), trainer -> $OUT on $DEVICE"
"$PIPELINE" --input "$SAMPLE" --data-dir "$DATA" --ring-slots 4 --seq-len 256 --chunks-per-shard 16 \
  --val-tokens 16384 --max-tokens "$MAX_TOKENS" --log-every 30 --quiet &
PIPELINE_PID=$!
"$TRAINER" train --data "$DATA" --follow --model tiny --out "$OUT" --overwrite --device "$DEVICE" --dtype "$DTYPE" \
  --steps "$STEPS" --warmup 10 --micro-batch 4 --grad-accum 1 --muon-lr 0.02 --adamw-lr 0.01 \
  --eval-every 25 --eval-chunks 16 --save-every 50 --sample-every 50 --sample-prompt "The meaning of life is" &
TRAINER_PID=$!
trap 'kill "$PIPELINE_PID" "$TRAINER_PID" 2>/dev/null || true' EXIT
# Either program failing stops the other (the trainer alone would wait for data for ever).
pipeline_running=1
while kill -0 "$TRAINER_PID" 2>/dev/null; do
  if [[ $pipeline_running == 1 ]] && ! kill -0 "$PIPELINE_PID" 2>/dev/null; then
    pipeline_running=0
    if ! wait "$PIPELINE_PID"; then
      echo "demo: the pipeline failed (see above); stopping the trainer" >&2
      kill -TERM "$TRAINER_PID" 2>/dev/null || true
      wait "$TRAINER_PID" || true
      exit 1
    fi
  fi
  sleep 1
done
wait "$TRAINER_PID" || { echo "demo: the trainer failed (see above)" >&2; exit 1; }
[[ $pipeline_running == 1 ]] && wait "$PIPELINE_PID"
trap - EXIT

# ---- results ---------------------------------------------------------------------------------
echo
echo "demo: validation loss of the final checkpoint on the val shards of $DATA:"
"$TRAINER" eval --checkpoint "$OUT" --data "$DATA" --max-chunks 16 --dtype "$DTYPE" --device "$DEVICE"
echo
echo "demo: a sample from the final checkpoint:"
"$TRAINER" generate --checkpoint "$OUT" --prompt "The meaning of life is" --max-tokens 60 --device "$DEVICE"
echo
echo "demo: done. Look at $OUT/loss.png (loss, learning rates, gradient norm), $OUT/metrics.jsonl,"
echo "      TensorBoard files in $OUT/tb (tensorboard --logdir $OUT), checkpoints in $OUT/ckpt-*"
