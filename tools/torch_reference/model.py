"""Mamba-1 language model in plain PyTorch, for the side-by-side baseline (mamba_bench.py).

Parameter names and shapes are those of transformers' MambaForCausalLM (backbone.embeddings,
backbone.layers.N.{norm, mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}},
backbone.norm_f, lm_head tied to the embedding), which is also what the Rust trainer uses. The
mixer follows the non-fused path of mamba_ssm's Mamba module: in_proj, depthwise nn.Conv1d
(padding d_conv-1, trimmed), SiLU, x_proj, dt_proj, selective scan with D skip and z gating,
out_proj. The residual stream stays f32 (as mamba_ssm's residual_in_fp32).

The selective scan is either `selective_scan_ref` (plain PyTorch, sequential over time, any
device) or the fused CUDA kernels of state-spaces/mamba, built at run time by
`build_extension` from a csrc directory given on the command line (nothing of mamba is vendored).
"""

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

PRESETS = {  # name: (d_model, n_layer), the shapes of state-spaces/mamba-{130m,...,1.4b}
    "130m": (768, 24),
    "370m": (1024, 48),
    "790m": (1536, 48),
    "1.4b": (2048, 48),
    "tiny": (64, 2),  # the Rust trainer's `tiny` preset (CPU demo model)
}


@dataclass
class MambaConfig:
    d_model: int
    n_layer: int
    vocab_size: int = 50257  # GPT-2; padded to 50264 like the Rust trainer (mamba_ssm: 50277 -> 50280)
    pad_vocab_multiple: int = 8
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    norm_eps: float = 1e-5
    scan: str = "cuda"  # "cuda" (fused extension) or "ref"

    @property
    def d_inner(self):
        return self.expand * self.d_model

    @property
    def dt_rank(self):
        return math.ceil(self.d_model / 16)

    @property
    def padded_vocab(self):
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


# ---------------------------------------------------------------- selective scan: reference


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    """y = scan(u) · silu(z), computed in f32, returned in u's dtype.

    u, delta, z: (b, d, l); A: (d, n) f32; B, C: (b, n, l); D, delta_bias: (d,) f32.
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t · h_t + D u_t, Δ = softplus(delta + bias).
    """
    with torch.autocast(device_type=u.device.type, enabled=False):
        dtype = u.dtype
        u, delta, B, C, z = (t.float() for t in (u, delta, B, C, z))
        delta = F.softplus(delta + delta_bias[:, None])
        dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (b, d, l, n)
        dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, l, n)
        Ct = C.transpose(1, 2).unsqueeze(1)  # (b, 1, l, n)
        h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        ys = []
        for t in range(u.shape[2]):
            h = dA[:, :, t] * h + dBu[:, :, t]
            ys.append((h * Ct[:, :, t]).sum(-1))
        y = torch.stack(ys, dim=-1) + u * D[:, None]
        return (y * F.silu(z)).to(dtype)


# ---------------------------------------------------------------- selective scan: fused CUDA

_EXT = None  # the loaded selective_scan_cuda module (set_extension)


def set_extension(module):
    global _EXT
    _EXT = module


def extension_loaded():
    return _EXT is not None


# The extension's pybind functions are wrapped as torch custom ops (with shape-only fake
# versions) so that torch.compile can trace through SelectiveScanFn instead of breaking the graph.
@torch.library.custom_op("mamba_bench::scan_fwd", mutates_args=())
def _scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
              delta_bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # returns out (before gating, kept for the backward), x (chunk states), out_z (gated output)
    out, x, out_z = _EXT.fwd(u, delta, A, B, C, D, z, delta_bias, True)
    return out, x, out_z


@_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias):
    b, d, l = u.shape
    n_chunks = (l + 2047) // 2048  # the kernel's chunk length
    x = u.new_empty((b, d, n_chunks, 2 * A.shape[1]), dtype=A.dtype)
    return torch.empty_like(delta), x, torch.empty_like(z)


@torch.library.custom_op("mamba_bench::scan_bwd", mutates_args=())
def _scan_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
              delta_bias: Tensor, dout: Tensor, x: Tensor, out: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    # dz=None (allocated by the extension), delta_softplus=True, recompute_out_z=False
    du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = _EXT.bwd(
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, True, False)
    return du, ddelta, dA, dB, dC, dD, ddelta_bias, dz


@_scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, dout, x, out):
    return tuple(torch.empty_like(t) for t in (u, delta, A, B, C, D, delta_bias, z))


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


class SelectiveScanFn(torch.autograd.Function):
    """Same arguments and result as selective_scan_ref, through the fused kernels."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias):
        dtype = u.dtype  # the kernel wants delta, B, C, z in u's dtype; A, D, delta_bias f32
        u = _last_dim_contiguous(u)
        delta, z = (_last_dim_contiguous(t.to(dtype)) for t in (delta, z))
        B, C = (t.to(dtype).unsqueeze(1).contiguous() for t in (B, C))  # (b, groups=1, n, l)
        D, delta_bias = D.float().contiguous(), delta_bias.float().contiguous()
        out, x, out_z = torch.ops.mamba_bench.scan_fwd(u, delta, A, B, C, D, z, delta_bias)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        return out_z

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        dout = _last_dim_contiguous(dout.to(u.dtype))
        du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = torch.ops.mamba_bench.scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, dout, x, out)
        return du, ddelta, dA, dB.squeeze(1), dC.squeeze(1), dD, dz, ddelta_bias


def selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias):
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias)


def torch_requires_cxx20():
    """torch >= 2.14's headers refuse C++17 (mamba's setup.py passes -std=c++17)."""
    inc = os.path.join(os.path.dirname(torch.__file__), "include")
    for rel in ("ATen/ATen.h", "torch/csrc/api/include/torch/all.h"):
        try:
            with open(os.path.join(inc, rel)) as f:
                if "C++20 or later" in f.read():
                    return True
        except OSError:
            pass
    return False


SOURCES = ["selective_scan.cpp"] + [f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")] + [
    f"selective_scan_bwd_{t}_{k}.cu" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")]


def build_extension(csrc, build_dir, arch="90", cxx_std="auto", verbose=True):
    """JIT-build state-spaces/mamba's csrc/selective_scan with the flags of mamba's setup.py
    (one architecture only). Returns (module, seconds)."""
    from torch.utils import cpp_extension as ce

    csrc = os.path.abspath(csrc)
    missing = [s for s in SOURCES if not os.path.isfile(os.path.join(csrc, s))]
    if missing:
        raise SystemExit(f"--csrc {csrc}: missing {', '.join(missing)} (want mamba's csrc/selective_scan)")
    if not ce.is_ninja_available():
        raise SystemExit("ninja is not on PATH: torch.utils.cpp_extension.load needs it. Put a ninja "
                         "binary on PATH (e.g. the one in `pip download ninja`'s wheel, "
                         "ninja-*.data/scripts/ninja) or `pip install ninja`.")
    if ce.CUDA_HOME is None or not os.path.exists(os.path.join(ce.CUDA_HOME, "bin", "nvcc")):
        raise SystemExit(f"nvcc not found (CUDA_HOME={ce.CUDA_HOME}): set CUDA_HOME or put nvcc on PATH")
    if cxx_std == "auto":
        cxx_std = "20" if torch_requires_cxx20() else "17"
    std = f"-std=c++{cxx_std}"
    cuda_flags = [
        "-O3", std,
        "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
        "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
        "-gencode", f"arch=compute_{arch},code=sm_{arch}",
    ]
    os.makedirs(build_dir, exist_ok=True)
    print(f"building selective_scan_cuda: {len(SOURCES)} sources from {csrc}, sm_{arch}, {std}, "
          f"CUDA_HOME={ce.CUDA_HOME}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"MAX_JOBS={os.environ.get('MAX_JOBS', 'unset')}, build dir {build_dir}", flush=True)
    t0 = time.perf_counter()
    mod = ce.load(name="selective_scan_cuda", sources=[os.path.join(csrc, s) for s in SOURCES],
                  extra_cflags=["-O3", std], extra_cuda_cflags=cuda_flags,
                  extra_include_paths=[csrc], build_directory=build_dir, verbose=verbose)
    secs = time.perf_counter() - t0
    print(f"selective_scan_cuda ready in {secs:.1f} s (build or load of an up-to-date build)", flush=True)
    return mod, secs


# ---------------------------------------------------------------- model


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class MambaMixer(nn.Module):
    def __init__(self, cfg: MambaConfig, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4):
        super().__init__()
        d, di, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.d_state, self.dt_rank = n, r
        self.scan = selective_scan_cuda if cfg.scan == "cuda" else selective_scan_ref
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d, bias=False)
        # mamba_ssm's init: dt_proj weight U(±r^-1/2); softplus(dt bias) log-uniform in [dt_min, dt_max];
        # out_proj rescaled by 1/sqrt(n_layer) (prenorm residual rescale)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -r ** -0.5, r ** -0.5)
            dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.out_proj.weight /= math.sqrt(cfg.n_layer)

    def forward(self, h):  # h: (b, l, d_model)
        b, l, _ = h.shape
        # in_proj as W @ h^T so that x and z come out as (b, d_inner, l) views with unit stride in l
        xz = (self.in_proj.weight @ h.reshape(b * l, -1).t()).view(-1, b, l).permute(1, 0, 2)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :l])  # (b, d_inner, l)
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(b * l, -1))  # (b l, r + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).view(-1, b, l).permute(1, 0, 2)  # (b, d_inner, l), no bias
        B = B.view(b, l, -1).transpose(1, 2).contiguous()  # (b, n, l)
        C = C.view(b, l, -1).transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        y = self.scan(x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float())  # bias + softplus inside
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = MambaMixer(cfg)

    def forward(self, h):
        return h + self.mixer(self.norm(h))  # h stays f32 under autocast (mixer output is upcast)


class MambaBackbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, input_ids):
        h = self.embeddings(input_ids)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h)


class MambaLM(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = MambaBackbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
        self.lm_head.weight = self.backbone.embeddings.weight  # tied

    def forward(self, input_ids, targets=None):
        logits = self.lm_head(self.backbone(input_ids))
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # f32 under autocast

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # the tied embedding counted once
