#!/usr/bin/env python3
"""Summarise `ncu --metrics gpu__time_duration.sum --print-summary per-kernel --csv` output:
GPU time per kernel (all launches), largest first, and the total, per profiled step.

Usage: tools/ncu_summary.py NCU_CSV [STEPS] [TOP]
STEPS: how many training steps the profiled command ran (trainer bench runs one warm-up step
plus --steps), to print per-step milliseconds. TOP: rows to print (default 30).
"""
import csv
import sys

UNIT_MS = {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}


def main() -> None:
    path = sys.argv[1]
    steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    rows = list(csv.reader(open(path, newline="")))
    try:
        start = next(i for i, r in enumerate(rows) if r and r[0] == "Process ID")
    except StopIteration:
        sys.exit(f"{path}: no per-kernel summary header (was ncu run with --print-summary per-kernel --csv?)")
    header = rows[start]
    col = {name: header.index(name) for name in ("Kernel Name", "Block Size", "Grid Size", "Invocations", "Metric Unit", "Average")}
    kernels = []
    for r in rows[start + 1:]:
        if len(r) < len(header):
            continue
        n = int(r[col["Invocations"]].replace(",", ""))
        avg_ms = float(r[col["Average"]].replace(",", "")) * UNIT_MS[r[col["Metric Unit"]]]
        kernels.append((n * avg_ms / steps, r[col["Kernel Name"]][:70], r[col["Grid Size"]], n, avg_ms))
    kernels.sort(reverse=True)
    total = sum(k[0] for k in kernels)
    print(f"GPU kernel time per step: {total:.1f} ms over {len(kernels)} kernel kinds")
    print(f"{'ms/step':>9} {'share':>6}  {'launches':>8} {'avg ms':>8}  kernel (grid)")
    for ms, name, grid, n, avg in kernels[:top]:
        print(f"{ms:9.2f} {100 * ms / total:5.1f}%  {n / steps:8.0f} {avg:8.3f}  {name} {grid}")


if __name__ == "__main__":
    main()
