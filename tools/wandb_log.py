#!/usr/bin/env python3
"""Logs a `trainer train` run to Weights & Biases: its config (config.resolved.toml), every step,
eval and sample record of metrics.jsonl (the same scalars as its TensorBoard files), and the
samples as a table. Works after or during a run (rerun it: the W&B run id is derived from the run
directory, so the same W&B run is continued), online or offline.

    pip install wandb
    python3 tools/wandb_log.py runs/demo --project mamba-fineweb [--entity ME] [--name demo]
    WANDB_MODE=offline python3 tools/wandb_log.py runs/demo   # writes ./wandb/offline-run-*
    wandb sync wandb/offline-run-*                             # uploads it later

(`wandb sync --sync-tensorboard RUN_DIR/tb` does the same from the TensorBoard files, but only
with wandb <= 0.29: later versions removed that option.)
"""
import argparse
import hashlib
import json
import pathlib
import sys
import tomllib

STEP_KEYS = {
    "loss": "train/loss",
    "lr_muon": "train/lr_muon",
    "lr_adamw": "train/lr_adamw",
    "grad_norm": "train/grad_norm",
    "tokens_per_sec": "perf/tokens_per_sec",
    "step_ms": "perf/step_ms",
    "data_wait_ms": "perf/data_wait_ms",
    "fwd_ms": "perf/fwd_ms",
    "bwd_ms": "perf/bwd_ms",
    "opt_ms": "perf/opt_ms",
    "tokens": "tokens",
}
EVAL_KEYS = {"val_loss": "val/loss", "val_ppl": "val/ppl", "tokens": "tokens"}


def records(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}: line {n}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=pathlib.Path, help="a run directory of `trainer train` (metrics.jsonl, config.resolved.toml)")
    ap.add_argument("--project", default="mamba-fineweb")
    ap.add_argument("--entity", default=None)
    ap.add_argument("--name", default=None, help="W&B run name (default: the run directory's name)")
    ap.add_argument("--mode", choices=["online", "offline"], default=None, help="default: $WANDB_MODE, else online")
    args = ap.parse_args()

    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.is_file():
        sys.exit(f"{metrics}: no such file (is {args.run_dir} a run directory of `trainer train`?)")
    config_file = args.run_dir / "config.resolved.toml"
    config = tomllib.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}

    import wandb  # imported late: --help works without it

    run_id = hashlib.sha1(str(args.run_dir.resolve()).encode()).hexdigest()[:12]
    run = wandb.init(project=args.project, entity=args.entity, name=args.name or args.run_dir.resolve().name,
                     id=run_id, resume="allow", config=config, mode=args.mode)
    counts = {"step": 0, "eval": 0, "sample": 0}
    samples = wandb.Table(columns=["step", "prompt", "text"])
    for r in records(metrics):
        kind = r.get("kind")
        keys = {"step": STEP_KEYS, "eval": EVAL_KEYS}.get(kind)
        if keys is not None:
            run.log({w: r[k] for k, w in keys.items() if k in r}, step=int(r["step"]))
        elif kind == "sample":
            samples.add_data(int(r["step"]), r.get("prompt", ""), r.get("text", ""))
        counts[kind] = counts.get(kind, 0) + 1
    if counts["sample"]:
        run.log({"samples": samples})
    run.finish()
    print(f"wandb_log: {args.run_dir}: {counts['step']} steps, {counts['eval']} evals, {counts['sample']} samples -> W&B run {run_id}")


if __name__ == "__main__":
    main()
