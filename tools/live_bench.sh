#!/usr/bin/env bash
# The live path at GPU speed (issue 18): `pipeline` streaming parquet over HTTP from a loopback Hub
# stand-in into a ring + `trainer train --follow` on one GPU, for SECONDS; then the same number of
# steps in static mode on shards built offline (`--ring-slots 0`) from the same server. Prints
# tokens/s live vs static, the data-wait share of step time, the most train shards seen on disk
# during the live run (sampled every 0.5 s), and the val losses of both runs.
#
# Needs only bash, python3 and the two release binaries (no cargo, no internet):
#   tools/live_bench.sh PIPELINE TRAINER CORPUS OUT [SECONDS]
#     PIPELINE, TRAINER  the binaries (e.g. target/release/pipeline, a --features cuda trainer)
#     CORPUS             a parquet file or a folder searched for *.parquet (FineWeb schema)
#     OUT                a new work folder (data dirs, run dirs, logs, summary.txt)
#     SECONDS            live run length, default 180
# Environment (defaults = the GPU benchmark): MODEL=130m DEVICE=cuda:0 DTYPE=bf16 MICRO_BATCH=16
#   GRAD_ACCUM=2 SEQ_LEN=1024 CHUNKS_PER_SHARD=256 RING_SLOTS=64 COPIES=8 (names served per corpus
#   file) EVAL_EVERY=100 EVAL_CHUNKS=64 VAL_TOKENS=262144 WARMUP_STEPS=5 (left out of the speed
#   numbers) THREADS (pipeline threads, default all) EXTRA_TRAIN_ARGS.
# A CPU check of the script itself (about a minute):
#   MODEL=tiny DEVICE=cpu DTYPE=f32 MICRO_BATCH=2 GRAD_ACCUM=1 SEQ_LEN=128 CHUNKS_PER_SHARD=16 \
#   RING_SLOTS=4 EVAL_EVERY=10 EVAL_CHUNKS=8 VAL_TOKENS=4096 \
#   tools/live_bench.sh target/debug/pipeline target/debug/trainer ../shared/corpus/fineweb-mini /tmp/lb 20
set -euo pipefail

if [[ $# -lt 4 ]]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
PIPELINE=$(realpath "$1"); TRAINER=$(realpath "$2"); CORPUS=$(realpath "$3"); OUT=$4; SECONDS_LIVE=${5:-180}
MODEL=${MODEL:-130m}; DEVICE=${DEVICE:-cuda:0}; DTYPE=${DTYPE:-bf16}
MICRO_BATCH=${MICRO_BATCH:-16}; GRAD_ACCUM=${GRAD_ACCUM:-2}; SEQ_LEN=${SEQ_LEN:-1024}
CHUNKS_PER_SHARD=${CHUNKS_PER_SHARD:-256}; RING_SLOTS=${RING_SLOTS:-64}; COPIES=${COPIES:-8}
EVAL_EVERY=${EVAL_EVERY:-100}; EVAL_CHUNKS=${EVAL_CHUNKS:-64}; VAL_TOKENS=${VAL_TOKENS:-262144}
WARMUP_STEPS=${WARMUP_STEPS:-5}; EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
THREADS_ARG=(); [[ -n "${THREADS:-}" ]] && THREADS_ARG=(--threads "$THREADS")
for b in "$PIPELINE" "$TRAINER"; do [[ -x "$b" ]] || { echo "not an executable: $b" >&2; exit 2; }; done
command -v python3 >/dev/null || { echo "python3 is needed (the Hub stand-in)" >&2; exit 2; }
[[ -e "$OUT" ]] && { echo "$OUT exists; give a new folder" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
export RUST_LOG=${RUST_LOG:-info}
unset HF_TOKEN HF_ENDPOINT
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# ---- 1. the loopback Hub stand-in: tree API + resolve with Range, every corpus file under COPIES names
cat >"$OUT/hub_server.py" <<'PY'
import http.server, json, os, re, sys, urllib.parse
corpus, copies, port_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
REPO, SUBSET = "HuggingFaceFW/fineweb", "sample/10BT"
srcs = [corpus] if os.path.isfile(corpus) else sorted(
    os.path.join(d, f) for d, _, fs in os.walk(corpus) for f in fs if f.endswith(".parquet"))
if not srcs:
    sys.exit(f"no parquet files in {corpus}")
files = {}  # served path -> local file
for k in range(copies):
    for i, src in enumerate(srcs):
        files[f"{SUBSET}/{k:03d}_{i:05d}.parquet"] = src

class Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send(self, code, body, ctype="application/octet-stream", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        tree = f"/api/datasets/{REPO}/tree/"
        resolve = f"/datasets/{REPO}/resolve/"
        if path.startswith(tree):
            prefix = path[len(tree):].split("/", 1)[1].rstrip("/") if "/" in path[len(tree):] else ""
            entries = [{"type": "file", "oid": "0", "path": p, "size": os.path.getsize(f)}
                       for p, f in files.items() if p.startswith(prefix)]
            return self.send(200, json.dumps(entries).encode(), "application/json")
        if path.startswith(resolve):
            name = path[len(resolve):].split("/", 1)[1] if "/" in path[len(resolve):] else ""
            if name not in files:
                return self.send(404, b"no such file")
            size = os.path.getsize(files[name])
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            start, end = (0, size - 1) if not m else (int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1))
            if start >= size or start > end:
                return self.send(416, b"", extra=[("Content-Range", f"bytes */{size}")])
            with open(files[name], "rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
            if not m:
                return self.send(200, body)
            return self.send(206, body, extra=[("Content-Range", f"bytes {start}-{end}/{size}")])
        self.send(404, b"not found")

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
with open(port_file + ".tmp", "w") as f: f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
PY
python3 "$OUT/hub_server.py" "$CORPUS" "$COPIES" "$OUT/port" >"$OUT/hub_server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s "$OUT/port" ]] && break; sleep 0.1; done
[[ -s "$OUT/port" ]] || { echo "the Hub stand-in did not start:" >&2; cat "$OUT/hub_server.log" >&2; exit 1; }
ENDPOINT="http://127.0.0.1:$(cat "$OUT/port")"
echo "Hub stand-in at $ENDPOINT: $(python3 -c "import json,urllib.request;print(len(json.load(urllib.request.urlopen('$ENDPOINT/api/datasets/HuggingFaceFW/fineweb/tree/main/sample/10BT?recursive=true'))))") parquet files"

PIPE_ARGS=(--endpoint "$ENDPOINT" --seq-len "$SEQ_LEN" --chunks-per-shard "$CHUNKS_PER_SHARD" --val-tokens "$VAL_TOKENS" --log-every 10 "${THREADS_ARG[@]}")
# shellcheck disable=SC2206
TRAIN_ARGS=(--model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --micro-batch "$MICRO_BATCH" --grad-accum "$GRAD_ACCUM"
    --eval-every "$EVAL_EVERY" --eval-chunks "$EVAL_CHUNKS" --save-every 0 --seed 1 $EXTRA_TRAIN_ARGS)

# ---- 2. live: pipeline into a ring + trainer --follow, for SECONDS_LIVE ----------------------------
LIVE_DATA="$OUT/live-data"; LIVE_RUN="$OUT/live-run"
"$PIPELINE" "${PIPE_ARGS[@]}" --data-dir "$LIVE_DATA" --ring-slots "$RING_SLOTS" >"$OUT/live-pipeline.log" 2>&1 &
PIPE_PID=$!; PIDS+=($PIPE_PID)
"$TRAINER" train --data "$LIVE_DATA" --follow --out "$LIVE_RUN" --steps 100000000 "${TRAIN_ARGS[@]}" >"$OUT/live-trainer.log" 2>&1 &
TRAIN_PID=$!; PIDS+=($TRAIN_PID)
( set +e +o pipefail  # the data dir may not exist yet: keep sampling
  max=0; while :; do
    n=$(find "$LIVE_DATA" -maxdepth 1 -name 'train-*.shard' 2>/dev/null | wc -l)
    if (( n > max )); then max=$n; echo "$max" >"$OUT/max_train_shards"; fi
    sleep 0.5
  done ) &
SAMPLER_PID=$!; PIDS+=($SAMPLER_PID)
echo "live run: $SECONDS_LIVE s (logs: $OUT/live-*.log)"
# The clock starts at the first step (model build, CUDA init and the first shard are not counted).
for _ in $(seq 1200); do grep -q '"kind":"step"' "$LIVE_RUN/metrics.jsonl" 2>/dev/null && break; kill -0 $TRAIN_PID 2>/dev/null || break; sleep 0.5; done
sleep "$SECONDS_LIVE"
kill -TERM $TRAIN_PID 2>/dev/null || true
# SIGTERM ends the trainer with status 143 (128 + 15) after its checkpoint: that is the expected end.
rc=0; wait $TRAIN_PID || rc=$?
(( rc == 0 || rc == 143 )) || { echo "live trainer failed (status $rc):" >&2; tail -20 "$OUT/live-trainer.log" >&2; exit 1; }
kill -TERM $PIPE_PID 2>/dev/null || true
wait $PIPE_PID || true
kill $SAMPLER_PID 2>/dev/null || true
STEPS=$(grep -c '"kind":"step"' "$LIVE_RUN/metrics.jsonl" || true)
(( STEPS > WARMUP_STEPS )) || { echo "the live run made only $STEPS steps" >&2; tail -20 "$OUT/live-trainer.log" >&2; exit 1; }

# ---- 3. static: the same source offline (--ring-slots 0), then the same number of steps -----------
STATIC_DATA="$OUT/static-data"; STATIC_RUN="$OUT/static-run"
TOKENS=$(( (STEPS + 1) * MICRO_BATCH * GRAD_ACCUM * SEQ_LEN ))
echo "static run: pipeline --ring-slots 0 --max-tokens $TOKENS, then $STEPS steps"
"$PIPELINE" "${PIPE_ARGS[@]}" --data-dir "$STATIC_DATA" --ring-slots 0 --max-tokens "$TOKENS" >"$OUT/static-pipeline.log" 2>&1 \
    || { echo "static pipeline failed:" >&2; tail -20 "$OUT/static-pipeline.log" >&2; exit 1; }
"$TRAINER" train --data "$STATIC_DATA" --out "$STATIC_RUN" --steps "$STEPS" "${TRAIN_ARGS[@]}" >"$OUT/static-trainer.log" 2>&1 \
    || { echo "static trainer failed:" >&2; tail -20 "$OUT/static-trainer.log" >&2; exit 1; }

# ---- 4. summary ---------------------------------------------------------------------------------------
python3 - "$LIVE_RUN/metrics.jsonl" "$STATIC_RUN/metrics.jsonl" "$(cat "$OUT/max_train_shards" 2>/dev/null || echo 0)" \
    "$RING_SLOTS" "$WARMUP_STEPS" "$SECONDS_LIVE" <<'PY' | tee "$OUT/summary.txt"
import json, sys
live_path, static_path, max_shards, slots, skip, secs = sys.argv[1:]
def load(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in recs if r["kind"] == "step"], [r for r in recs if r["kind"] == "eval"]
def speed(steps):
    s = steps[int(skip):]
    tok = sum(r["tokens_per_sec"] * r["step_ms"] / 1e3 for r in s)
    compute = sum(r["step_ms"] for r in s) / 1e3
    wait = sum(r["data_wait_ms"] for r in s) / 1e3
    wall = (s[-1]["time"] - s[0]["time"]) if len(s) > 1 else float("nan")
    wall_tok = (s[-1]["tokens"] - s[0]["tokens"]) / wall if len(s) > 1 and wall > 0 else float("nan")
    return tok / (compute + wait), wait / (compute + wait), wall_tok, len(s)
(ls, le), (ss, se) = load(live_path), load(static_path)
lt, lw, lwall, ln = speed(ls)
st, sw, swall, sn = speed(ss)
print(f"steps: live {len(ls)} in {secs} s, static {len(ss)} (speed over steps {int(skip)+1}.., {ln} / {sn} steps)")
print(f"tokens/s (step + data wait): live {lt:,.0f}  static {st:,.0f}  live/static {lt / st:.1%}")
print(f"tokens/s (wall clock, evals and logging included): live {lwall:,.0f}  static {swall:,.0f}  live/static {lwall / swall:.1%}")
print(f"data wait share of step time: live {lw:.2%}  static {sw:.2%}")
print(f"most train shards on disk during the live run: {max_shards} (ring slots {slots})")
fmt = lambda ev: ", ".join(f"{e['step']}: {e['val_loss']:.4f}" for e in ev) or "none"
print(f"val loss live   (step: loss): {fmt(le)}")
print(f"val loss static (step: loss): {fmt(se)}")
digests = {e.get("val_digest") for e in le + se}
print(f"val set: {'the same chunks in both runs' if len(digests) == 1 else 'DIFFERENT chunks: ' + str(sorted(map(str, digests)))} ({', '.join(sorted(map(str, digests)))})")
PY
