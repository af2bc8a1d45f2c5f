#!/usr/bin/env bash
# The large presets on one GPU (issue 22): `trainer bench` with `--micro-batch auto` at several
# batch sizes (the largest micro-batch that fits, its tokens/s, MFU and Muon's share), then a short
# training run on real shards whose loss must fall and whose final checkpoint must save, and, when
# TORCH_CSRC is set, the PyTorch reference (tools/torch_reference) at micro-batch TORCH_MICRO_BATCH.
# Peak memory is sampled by nvidia-smi every 100 ms (whole device).
#
#   tools/gpu_large.sh TRAINER SHARD_DIR OUT
# Environment: MODEL (1.4b), BATCHES ("16 32 64", for bench), TRAIN_BATCH (16), TRAIN_STEPS (100),
#   DEVICE (cuda:0), TORCH_CSRC (state-spaces/mamba's csrc/selective_scan; unset = no PyTorch run),
#   TORCH_MICRO_BATCH (8). On the CPU, to check the script itself (a minute):
#   MODEL=tiny DEVICE=cpu BATCHES=4 TRAIN_BATCH=4 TRAIN_STEPS=6 tools/gpu_large.sh \
#     target/release/trainer SHARDS /tmp/gl
set -euo pipefail
if [[ $# -lt 3 ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
TRAINER=$(realpath "$1"); SHARDS=$(realpath "$2"); OUT=$3
MODEL=${MODEL:-1.4b}; DEVICE=${DEVICE:-cuda:0}; BATCHES=${BATCHES:-16 32 64}
TRAIN_BATCH=${TRAIN_BATCH:-16}; TRAIN_STEPS=${TRAIN_STEPS:-100}; TORCH_MICRO_BATCH=${TORCH_MICRO_BATCH:-8}
[[ -e "$OUT" ]] && { echo "$OUT exists; give a new folder" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
DTYPE=bf16; [[ $DEVICE == cpu ]] && DTYPE=f32
SMI=""
peak_start() {
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/mem-$1.csv" &
    SMI=$!
}
peak_end() {
    [[ -n "$SMI" ]] || return 0
    kill "$SMI"; wait "$SMI" 2>/dev/null || true; SMI=""
    echo "$1: peak GPU memory $(sort -n "$OUT/mem-$1.csv" | tail -1) MiB (nvidia-smi, whole device)" | tee -a "$OUT/summary.txt"
}

# ---- 1. bench at each batch size, the micro-batch chosen by auto
for b in $BATCHES; do
    peak_start "bench-b$b"
    "$TRAINER" bench --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --micro-batch auto --batch-size "$b" \
        --steps 3 >"$OUT/bench-b$b.log" 2>&1 || { echo "bench at batch $b failed:" >&2; tail -5 "$OUT/bench-b$b.log" >&2; exit 1; }
    peak_end "bench-b$b"
    { echo "batch $b:"; grep -E "micro-batch auto|mean over" "$OUT/bench-b$b.log"; } | tee -a "$OUT/summary.txt"
done

# ---- 2. a short run on real shards: the loss falls, the final checkpoint saves
peak_start train
"$TRAINER" train --data "$SHARDS" --out "$OUT/run" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
    --batch-size "$TRAIN_BATCH" --steps "$TRAIN_STEPS" --warmup $(( TRAIN_STEPS / 10 + 1 )) --seed 0 \
    --eval-every $(( TRAIN_STEPS / 2 )) --eval-chunks 16 >"$OUT/train.log" 2>&1 \
    || { echo "training failed:" >&2; tail -5 "$OUT/train.log" >&2; exit 1; }
peak_end train
python3 - "$OUT/run/metrics.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in recs if r["kind"] == "step"]
evals = [r for r in recs if r["kind"] == "eval"]
first, last = steps[0]["loss"], sum(r["loss"] for r in steps[-3:]) / min(3, len(steps))
vals = ", ".join("%d: %.4f" % (e["step"], e["val_loss"]) for e in evals)
print(f"train: {len(steps)} steps, loss {first:.3f} -> {last:.3f} (mean of the last 3), val {vals}")
tps = [r["tokens_per_sec"] for r in steps[len(steps) // 5:]]
print(f"train: {sum(tps) / len(tps):,.0f} tokens/s after the first fifth of the steps")
sys.exit(0 if last < first else 1)
PY
ls -d "$OUT"/run/ckpt-* >/dev/null 2>&1 || { echo "no checkpoint was saved" >&2; exit 1; }
echo "train: final checkpoint $(ls -d "$OUT"/run/ckpt-* | tail -1)" | tee -a "$OUT/summary.txt"

# ---- 3. the PyTorch reference at the same model, fused scan (optional)
if [[ -n "${TORCH_CSRC:-}" ]]; then
    python3 "$(dirname "$0")/torch_reference/mamba_bench.py" --csrc "$TORCH_CSRC" --build-dir "$OUT/ssbuild" \
        --quiet-build --model "$MODEL" --micro-batch "$TORCH_MICRO_BATCH" --steps 4 --warmup 2 >"$OUT/torch.log" 2>&1 \
        || { echo "the PyTorch reference failed:" >&2; tail -5 "$OUT/torch.log" >&2; exit 1; }
    grep -E "^torch-baseline" "$OUT/torch.log" | tee -a "$OUT/summary.txt"
fi
