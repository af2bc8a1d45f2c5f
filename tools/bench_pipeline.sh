#!/usr/bin/env bash
# Benchmark (prints numbers, asserts nothing): `pipeline --input` against a Python reference after
# nanoGPT's fineweb.py (tiktoken encode_ordinary in a multiprocessing pool, uint16 output), on the
# same parquet file and the same cores. Prints tokens/s of both, the ratio and peak RSS.
#
#   tools/bench_pipeline.sh [FILE.parquet]     (default: ../shared/corpus/fineweb-mini/sample/10BT/000_00000.parquet)
#
# Needs: cargo, python3 with tiktoken numpy pyarrow (pip install tiktoken numpy pyarrow), /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
FILE=${1:-$SHARED/corpus/fineweb-mini/sample/10BT/000_00000.parquet}
RANKS=$SHARED/tokenizers/gpt2/r50k_base.tiktoken
CORES=$(nproc)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -p mamba-pipeline 2>&1 | tail -1
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)  # other work on the machine depresses and scatters both numbers

# Rust: the whole binary, wall clock (tokenizer setup, reading, tokenizing, compressing, fsync).
/usr/bin/time -v target/release/pipeline --input "$FILE" --ring-slots 0 --data-dir "$WORK/data" \
    --threads "$CORES" --quiet 2> "$WORK/rust.log" || { cat "$WORK/rust.log"; exit 1; }
rust_tokens=$(grep -o 'tokens=[0-9]*' "$WORK/rust.log" | head -1 | cut -d= -f2)
rust_wall=$(grep 'Elapsed (wall clock)' "$WORK/rust.log" | awk '{print $NF}')
rust_rss=$(grep 'Maximum resident set size' "$WORK/rust.log" | awk '{print $NF}')
rust_cpu=$(awk '/User time \(seconds\)|System time \(seconds\)/ {s += $NF} END {print s}' "$WORK/rust.log")

# Python reference: same file, same number of processes.
/usr/bin/time -v python3 tools/bench_reference_tokenizer.py "$FILE" --ranks "$RANKS" --procs "$CORES" \
    --out "$WORK/python.bin" > "$WORK/py.out" 2> "$WORK/py.log" || { cat "$WORK/py.out" "$WORK/py.log"; exit 1; }
py_tokens=$(grep -o 'tokens=[0-9]*' "$WORK/py.out" | cut -d= -f2)
py_secs=$(grep -o 'seconds=[0-9.]*' "$WORK/py.out" | cut -d= -f2)
py_wall=$(grep 'Elapsed (wall clock)' "$WORK/py.log" | awk '{print $NF}')
py_rss=$(grep 'Maximum resident set size' "$WORK/py.log" | awk '{print $NF}')
py_cpu=$(awk '/User time \(seconds\)|System time \(seconds\)/ {s += $NF} END {print s}' "$WORK/py.log")

echo "load average before the runs: $LOAD"
python3 - "$rust_tokens" "$rust_wall" "$rust_rss" "$py_tokens" "$py_secs" "$py_wall" "$py_rss" "$CORES" "$FILE" "$rust_cpu" "$py_cpu" <<'PY'
import sys
def secs(t):  # /usr/bin/time: [h:]m:ss.ss
    s = 0.0
    for part in t.split(":"):
        s = s * 60 + float(part)
    return s
rt, rw, rr, pt, ps, pw, pr, cores, f, rc, pc = sys.argv[1:]
rt, pt, rw, pw = int(rt), int(pt), secs(rw), secs(pw)
rust_tps, py_tps, py_tps_wall = rt / rw, pt / float(ps), pt / pw
print(f"file: {f}  cores: {cores}")
print(f"rust pipeline : {rt} tokens in {rw:.2f} s wall = {rust_tps/1e6:.2f} M tokens/s, peak RSS {int(rr)/1024:.0f} MiB, CPU {float(rc):.2f} s")
print(f"python tiktoken: {pt} tokens in {float(ps):.2f} s (tokenize+write, pool warm) = {py_tps/1e6:.2f} M tokens/s; "
      f"{pw:.2f} s wall incl. startup = {py_tps_wall/1e6:.2f} M tokens/s, peak RSS (main process) {int(pr)/1024:.0f} MiB, "
      f"CPU {float(pc):.2f} s (all processes)")
print(f"ratio rust/python: {rust_tps/py_tps:.2f}x (vs python's timed section), {rust_tps/py_tps_wall:.2f}x (wall vs wall)")
if rt != pt:
    print(f"note: token counts differ ({rt} vs {pt})")
PY
