#!/usr/bin/env bash
# Do two trainer builds train identically? Runs `trainer train` with each build on the same shards
# (same flags, same seed) and compares every step loss and val loss, digit for digit: the check
# of a change that must not change behaviour (a refactor, a file move, a new flag's default).
#
#   tools/loss_equality.sh OLD_TRAINER NEW_TRAINER SHARD_DIR OUT [extra train flags...]
#     OLD_TRAINER, NEW_TRAINER  the two `trainer` binaries (e.g. built at two commits)
#     SHARD_DIR                 shards made by `pipeline` (e.g. --input FILE.parquet --ring-slots 0)
#     OUT                       a new work folder (both run dirs and logs)
# Default flags (the GPU check): --model 130m --dtype bf16 --micro-batch 8 --grad-accum 2
#   --steps 200 --seed 0 --eval-every 50 --eval-chunks 64 --device cuda:0; extra flags replace
#   them all. A CPU check (about 3 minutes per build on 2 cores, seq-128 shards):
#   tools/loss_equality.sh old/trainer target/release/trainer shards /tmp/leq --model tiny \
#     --dtype f32 --micro-batch 2 --grad-accum 2 --steps 200 --seed 0 --eval-every 50 \
#     --eval-chunks 32 --device cpu
# Prints the number of equal losses (to 4 decimals and bitwise) and mean tokens/s of each build
# after step 20; exits 1 when a loss differs in its fourth decimal or a run fails.
set -euo pipefail
if [[ $# -lt 4 ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
OLD=$(realpath "$1"); NEW=$(realpath "$2"); SHARDS=$(realpath "$3"); OUT=$4; shift 4
[[ -e "$OUT" ]] && { echo "$OUT exists; give a new folder" >&2; exit 2; }
mkdir -p "$OUT"
FLAGS=(--model 130m --dtype bf16 --micro-batch 8 --grad-accum 2 --steps 200 --seed 0 --eval-every 50
    --eval-chunks 64 --device cuda:0)
[[ $# -gt 0 ]] && FLAGS=("$@")
for b in old new; do
    bin=$OLD; [[ $b == new ]] && bin=$NEW
    if ! "$bin" train --data "$SHARDS" --out "$OUT/run-$b" "${FLAGS[@]}" >"$OUT/$b.log" 2>&1; then
        echo "the $b build failed; see $OUT/$b.log" >&2
        tail -5 "$OUT/$b.log" >&2
        exit 1
    fi
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def records(b):
    return [json.loads(l) for l in open(f"{out}/run-{b}/metrics.jsonl")]
old, new = records("old"), records("new")
def losses(rs, kind, key):
    return [(r["step"], r[key]) for r in rs if r.get("kind") == kind]
ok = True
for kind, key in (("step", "loss"), ("eval", "val_loss")):
    a, b = losses(old, kind, key), losses(new, kind, key)
    same4 = sum(1 for x, y in zip(a, b) if x[0] == y[0] and f"{x[1]:.4f}" == f"{y[1]:.4f}")
    bitwise = sum(1 for x, y in zip(a, b) if x == y)
    print(f"{kind} losses: old {len(a)}, new {len(b)}; equal to 4 decimals {same4}, bitwise {bitwise}")
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if f"{x[1]:.4f}" != f"{y[1]:.4f}"), None)
    if first is not None:
        print(f"  first difference at step {a[first][0]}: old {a[first][1]:.6f} new {b[first][1]:.6f}")
    ok &= len(a) == len(b) and same4 == len(a)
for name, rs in (("old", old), ("new", new)):
    st = [r["tokens_per_sec"] for r in rs if r.get("kind") == "step"][20:]
    if st:
        print(f"{name}: mean {sum(st) / len(st):,.0f} tokens/s after step 20")
sys.exit(0 if ok else 1)
PY
