#!/usr/bin/env bash
# Sets up a fresh machine for building and testing: checks the Rust toolchain, installs the Python
# modules that tests and the shard reader use, and fetches the crates. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 not found (tests run tools/read_shard.py)" >&2; exit 1; }

# numpy + zstandard: tools/read_shard.py (the ~30-line reference reader of shard format v1).
python3 -m pip install -q --disable-pip-version-check numpy zstandard

cargo fetch
echo "setup: ok"
