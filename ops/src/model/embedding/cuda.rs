//! [`super::rows`] on the GPU: `kernels/embedding.cu`, blocks over the vocabulary rows, threads
//! over the columns, each row's positions read from the [`TokenIndex`]'s CSR. f32 sums, read
//! from f32 or bf16 (other float inputs are converted to f32 first).

use super::index::TokenIndex;
use crate::util::cuda_util::{cuda_storage, device, dispatch, ptx, tensor, view_of, Io};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, DType, Result, Tensor};

const NAME: &str = "embedding_rows";

/// Columns per thread per pass: `EMB_COLS` in the kernel.
const COLS: usize = 4;
/// At most this many threads per block (wider rows take several passes).
const MAX_THREADS: usize = 256;
/// At most this many blocks; more rows are taken grid-stride.
const MAX_BLOCKS: usize = 1 << 20;

/// `(V, d)` f32 for `grad: (n, d)` and `head: (V, d)` (checked by the caller, on the GPU).
pub(crate) fn rows(index: &TokenIndex, grad: &Tensor, head: Option<&Tensor>, d: usize) -> Result<Tensor> {
    let grad = kernel_input(grad)?; // (n, d)
    let head = head.map(kernel_input).transpose()?; // (V, d)
    dispatch!(NAME, grad.dtype(), by_head(index, &grad, head.as_ref(), d))
}

/// `t` contiguous, in f32 unless it is f32 or bf16 already.
fn kernel_input(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 | DType::BF16 => t.contiguous(),
        _ => t.to_dtype(DType::F32)?.contiguous(),
    }
}

/// Picks the head's element type for [`launch`].
fn by_head<G: Io>(index: &TokenIndex, grad: &Tensor, head: Option<&Tensor>, d: usize) -> Result<Tensor> {
    match head.map(Tensor::dtype) {
        Some(DType::BF16) => launch::<G, half::bf16>(index, grad, head, d),
        _ => launch::<G, f32>(index, grad, head, d),
    }
}

fn launch<G: Io, H: Io>(index: &TokenIndex, grad: &Tensor, head: Option<&Tensor>, d: usize) -> Result<Tensor> {
    let v = index.vocab();
    let Ok(di) = i32::try_from(d) else { bail!("{NAME}: rows of {d} columns are too wide for the kernel") };
    let vocab = v as u32; // TokenIndex keeps V < 2^32
    let (os, ol) = index.offsets().storage_and_layout();
    let (ps, pl) = index.positions().storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let gs = cuda_storage(NAME, "grad", &gs)?;
    let dev = device(gs);
    let ov = view_of::<u32>(NAME, "offsets", cuda_storage(NAME, "offsets", &os)?, ol)?; // (V+1,)
    let pv = view_of::<u32>(NAME, "positions", cuda_storage(NAME, "positions", &ps)?, pl)?; // (n,)
    let gv = view_of::<G>(NAME, "grad", gs, gl)?; // (n, d)
    let head = head.map(|h| h.storage_and_layout());
    let hv = match &head {
        Some((hs, hl)) => Some(view_of::<H>(NAME, "head_grad", cuda_storage(NAME, "head_grad", hs)?, hl)?), // (V, d)
        None => None,
    };
    // SAFETY: the kernel writes every element of dw (each row, each column, once).
    let dw = unsafe { dev.alloc::<f32>(v * d)? }; // (V, d)
    let name = if hv.is_some() {
        format!("embedding_rows_{}_{}", G::SUFFIX, H::SUFFIX)
    } else {
        format!("embedding_rows_{}", G::SUFFIX)
    };
    let func = dev.get_or_load_custom_func(&name, "mamba_embedding", ptx::EMBEDDING)?;
    // One pass over the columns where a block of at most MAX_THREADS covers them; whole warps
    // (the kernel shuffles positions across full warps).
    let threads = d.div_ceil(COLS).next_multiple_of(32).min(MAX_THREADS);
    let cfg = LaunchConfig {
        grid_dim: (v.min(MAX_BLOCKS) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut args = func.builder();
    args.arg(&ov).arg(&pv).arg(&gv);
    if let Some(hv) = &hv {
        args.arg(hv);
    }
    args.arg(&dw).arg(&vocab).arg(&di);
    // SAFETY: argument types and order match the kernel's signature (with the head's pointer
    // only in the variants that read one); offsets has V+1 entries, every position is < n and
    // every offset <= n (TokenIndex builds them so).
    unsafe { args.launch(cfg) }.w()?;
    Ok(tensor(dw, &dev, (v, d)))
}
