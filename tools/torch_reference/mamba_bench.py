#!/usr/bin/env python3
"""PyTorch side-by-side baseline for the Rust Mamba trainer: training throughput of a Mamba-1 LM
(model.py) in PyTorch eager (or --compile) with bf16 autocast, f32 master weights, fused AdamW,
and state-spaces/mamba's fused selective-scan CUDA kernels built at run time from --csrc.

GPU:  mamba_bench.py --csrc DIR/csrc/selective_scan --build-dir /tmp/ssbuild --model 130m \
          --micro-batch 16 --grad-accum 2 --steps 10 --warmup 3 --json out.json
      mamba_bench.py --csrc ... --build-dir ... --check      # fused scan vs reference, fwd + grads
      mamba_bench.py --csrc ... --build-dir ... --build-only # build (or load) the extension, timed
CPU:  mamba_bench.py --device cpu --scan ref --model tiny --seq 64 --micro-batch 2 --steps 3 --warmup 1

Summary line (one per run):
  torch-baseline model=… params=…M micro_batch=… grad_accum=… tokens/s=… step_ms=… mfu=…% (peak 989
  TFLOP/s dense bf16, H100) peak_mem=…GiB scan=cuda compile=no
MFU = 6 · params · tokens/s / peak (tied embedding counted once), as the Rust trainer computes it.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

PEAK_DENSE_BF16 = {"H100": 989e12, "H200": 989e12}  # SXM, no sparsity


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(M.PRESETS), default="130m")
    p.add_argument("--vocab-size", type=int, default=50257, help="before padding to a multiple of 8 "
                   "(50257 -> 50264 as the Rust trainer; 50277 -> 50280 as mamba_ssm)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--scan", choices=["cuda", "ref"], default="cuda")
    p.add_argument("--csrc", help="directory with state-spaces/mamba's csrc/selective_scan files")
    p.add_argument("--build-dir", default=os.path.join(tempfile.gettempdir(), "mamba_bench_ssbuild"))
    p.add_argument("--arch", default="90", help="CUDA arch for -gencode (90 = H100/H200)")
    p.add_argument("--cxx-std", choices=["auto", "17", "20"], default="auto",
                   help="auto: c++17 like mamba's setup.py, c++20 if torch's headers demand it")
    p.add_argument("--build-only", action="store_true", help="build/load the extension and exit")
    p.add_argument("--check", action="store_true", help="compare the fused scan with the reference and exit")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="optimizer steps before measuring")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="grad-norm clip (0 = off)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--repeat-batch", action="store_true", help="train on one fixed batch (loss must fall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the summary as JSON here")
    p.add_argument("--quiet-build", action="store_true", help="no ninja/nvcc command lines")
    return p.parse_args(argv)


def load_scan_extension(args):
    if not args.csrc:
        raise SystemExit("the fused scan needs --csrc DIR (mamba's csrc/selective_scan); on the CPU use --scan ref")
    mod, secs = M.build_extension(args.csrc, args.build_dir, args.arch, args.cxx_std, not args.quiet_build)
    M.set_extension(mod)
    return secs


def run_check(args):
    """Fused scan vs selective_scan_ref: output and all eight gradients, f32 and bf16 inputs."""
    if not torch.cuda.is_available() or not args.device.startswith("cuda"):
        print("check: skipped: no cuda (the fused scan needs a GPU)")
        return 0
    load_scan_extension(args)
    dev, failed = torch.device(args.device), False
    # (rtol, atol) per input dtype as in mamba's tests/ops/test_selective_scan.py; gradients get
    # its looser multiples (du x2, ddelta x5/x10, weights with z: max of both, A atol x5)
    for dtype, seqlen, rtol, atol in [(torch.float32, 333, 6e-4, 2e-3), (torch.bfloat16, 1024, 3e-2, 5e-2)]:
        g = torch.Generator(device=dev).manual_seed(args.seed)
        b, d, n = 2, 64, 16

        def rnd(*shape, dt=dtype, scale=1.0, uniform=False):
            f = torch.rand if uniform else torch.randn
            return (scale * f(*shape, generator=g, device=dev, dtype=torch.float32)).to(dt)

        inputs = dict(u=rnd(b, d, seqlen), delta=rnd(b, d, seqlen, scale=0.5, uniform=True),
                      A=rnd(d, n, dt=torch.float32, scale=-0.5, uniform=True), B=rnd(b, n, seqlen),
                      C=rnd(b, n, seqlen), D=rnd(d, dt=torch.float32), z=rnd(b, d, seqlen),
                      delta_bias=rnd(d, dt=torch.float32, scale=0.5, uniform=True))
        dout = rnd(b, d, seqlen)
        results = []
        for fn in (M.selective_scan_cuda, M.selective_scan_ref):
            leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
            out = fn(**leaves)
            out.backward(dout)
            results.append({"out": out.detach(), **{"d" + k: v.grad for k, v in leaves.items()}})
        rw, aw = max(1e-3, rtol), max(1e-3, atol)
        tol = {"out": (rtol, atol), "du": (2 * rtol, 2 * atol), "ddelta": (5 * rtol, 10 * atol),
               "dA": (rw, 5 * aw), "dB": (rtol, atol), "dC": (rtol, atol), "dD": (rw, aw),
               "dz": (rw, aw), "ddelta_bias": (rw, aw)}
        for k, (rt, at) in tol.items():
            a, r = results[0][k].float(), results[1][k].float()
            diff = (a - r).abs()
            ok = bool((diff <= at + rt * r.abs()).all())
            failed |= not ok
            print(f"check {str(dtype)[6:]:8s} L={seqlen:4d} {k:12s} max_abs_diff={diff.max().item():.3e} "
                  f"max_abs_ref={r.abs().max().item():.3e} rtol={rt:.0e} atol={at:.0e} {'ok' if ok else 'FAIL'}")
    print("check: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


def peak_flops(device):
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_DENSE_BF16.items():
        if key in name:
            return flops, key
    return None, name


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        return run_check(args)
    if args.build_only:  # needs nvcc, not a GPU
        load_scan_extension(args)
        return 0
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU; use --device cpu --scan ref")
    if args.scan == "cuda" and dev.type != "cuda":
        raise SystemExit("--scan cuda needs --device cuda; use --scan ref on the CPU")
    build_s = load_scan_extension(args) if args.scan == "cuda" else None
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), device "
          f"{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}", flush=True)

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    d_model, n_layer = M.PRESETS[args.model]
    cfg = M.MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=args.vocab_size, scan=args.scan)
    with torch.device(dev):
        model = M.MambaLM(cfg)  # f32 master weights
    n_params = model.num_params()
    groups = ([], [])  # weight decay on matrices (embedding, projections, conv); none on A_log, D, norms, biases
    for name, p in model.named_parameters():
        groups[p.dim() >= 2 and not name.endswith("A_log")].append(p)
    opt = torch.optim.AdamW([{"params": groups[1], "weight_decay": args.weight_decay},
                             {"params": groups[0], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=dev.type == "cuda")
    step_model = torch.compile(model) if args.compile else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else contextlib.nullcontext())

    M_, G, L = args.micro_batch, args.grad_accum, args.seq
    n_batches = 1 if args.repeat_batch else (args.warmup + args.steps) * G
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab_size, (M_, L + 1), generator=gen, device=dev)
               for _ in range(n_batches)]
    params = list(model.parameters())

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step(step):
        total = torch.zeros((), device=dev)
        for i in range(G):
            tokens = batches[0 if args.repeat_batch else step * G + i]
            with autocast:
                loss = step_model(tokens[:, :-1], tokens[:, 1:])
            (loss / G).backward()
            total += loss.detach() / G
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    tokens_per_step = M_ * G * L
    print(f"model={args.model} d_model={d_model} n_layer={n_layer} vocab={cfg.padded_vocab} "
          f"params={n_params} seq={L} micro_batch={M_} grad_accum={G} tokens/step={tokens_per_step} "
          f"scan={args.scan} compile={'yes' if args.compile else 'no'}", flush=True)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        sync()
        t0 = time.perf_counter()
        loss = train_step(step)
        sync()
        ms = (time.perf_counter() - t0) * 1e3
        loss = loss.item()
        losses.append(loss)
        measured = step >= args.warmup
        if measured:
            times.append(ms)
        print(f"{'step' if measured else 'warmup'} {step + 1 - (args.warmup if measured else 0):3d} "
              f"loss={loss:.4f} step_ms={ms:.1f} tokens/s={tokens_per_step / ms * 1e3:.0f}", flush=True)
        if not math.isfinite(loss):
            raise SystemExit(f"loss is not finite at step {step + 1}")

    step_ms = statistics.mean(times)
    tok_s = tokens_per_step / step_ms * 1e3
    peak, peak_name = peak_flops(dev)
    mfu = 6 * n_params * tok_s / peak if peak else None
    mfu_txt = (f"{100 * mfu:.1f}% (peak {peak / 1e12:.0f} TFLOP/s dense bf16, {peak_name})" if mfu is not None
               else f"n/a (no dense bf16 peak known for {peak_name})")
    if dev.type == "cuda":
        alloc, reserved = torch.cuda.max_memory_allocated(dev) / 2**30, torch.cuda.max_memory_reserved(dev) / 2**30
        mem_txt = f"{alloc:.1f}GiB"
    else:
        alloc = reserved = None
        mem_txt = "n/a"
    print(f"torch-baseline model={args.model} params={n_params / 1e6:.1f}M micro_batch={M_} grad_accum={G} "
          f"tokens/s={tok_s:.0f} step_ms={step_ms:.1f} mfu={mfu_txt} peak_mem={mem_txt} "
          f"scan={args.scan} compile={'yes' if args.compile else 'no'}")
    if reserved is not None:
        print(f"torch-baseline-mem max_memory_allocated={alloc:.2f}GiB max_memory_reserved={reserved:.2f}GiB "
              f"(measured steps only)")
    if args.json:
        summary = dict(model=args.model, params=n_params, d_model=d_model, n_layer=n_layer,
                       vocab=cfg.padded_vocab, seq=L, micro_batch=M_, grad_accum=G, steps=args.steps,
                       warmup=args.warmup, tokens_per_step=tokens_per_step, tokens_per_s=tok_s,
                       step_ms=step_ms, step_ms_median=statistics.median(times), step_ms_all=times,
                       mfu=mfu, peak_flops=peak, device=peak_name, scan=args.scan, compile=args.compile,
                       peak_mem_allocated_gib=alloc, peak_mem_reserved_gib=reserved, losses=losses,
                       extension_build_or_load_s=build_s, torch=torch.__version__,
                       torch_cuda=torch.version.cuda, lr=args.lr, clip=args.clip)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
