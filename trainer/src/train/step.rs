//! One optimizer step with gradient accumulation: forward + backward over each micro-batch,
//! gradients summed, the loss being the mean over every target token of the effective batch
//! (each micro-batch's mean loss is weighted by its share of the rows: 1/accum when all are full),
//! then global-norm clipping and the hybrid optimizer's update.
//! Micro-batch size is only a throughput knob: 1×4, 2×2 and 4×1 give the same update.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::data::Batch;
use crate::model::MambaLM;
use crate::optim::{clip_grad_norm, HybridOptimizer, StepStats};
use crate::parallel::Comm;

use super::phase_clock;

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepResult {
    /// Mean next-token loss over the effective batch.
    pub loss: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Sequences trained on (over all ranks).
    pub rows: usize,
    pub optim: StepStats,
    /// Forward, backward (summed over micro-batches) and all-reduce + clip + update times, ms,
    /// on the device's own timeline (`phase_clock`; forward and backward are rank 0's own).
    pub fwd_ms: f64,
    pub bwd_ms: f64,
    pub opt_ms: f64,
    /// Of `opt_ms`: the all-reduce of the loss and gradients (0 on a single device), ms.
    pub sync_ms: f64,
}

/// Inputs `(rows, seq_len)` and targets `(rows, seq_len)` of a batch of `seq_len + 1`-token chunks.
pub fn batch_tensors(batch: &Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let (inputs, targets) = batch_rows(batch)?;
    let shape = (batch.micro_batch, batch.seq_len);
    Ok((Tensor::from_vec(inputs, shape, device)?, Tensor::from_vec(targets, shape, device)?))
}

/// [`batch_tensors`] on the host: the rows' first and last `seq_len` tokens, flattened.
fn batch_rows(batch: &Batch) -> Result<(Vec<u32>, Vec<u32>)> {
    let (seq_len, chunk) = (batch.seq_len, batch.row_tokens());
    if batch.tokens.len() != batch.micro_batch * chunk {
        bail!("batch holds {} tokens, expected {} rows of {chunk}", batch.tokens.len(), batch.micro_batch);
    }
    let rows = || batch.tokens.chunks_exact(chunk);
    Ok((rows().flat_map(|r| &r[..seq_len]).copied().collect(), rows().flat_map(|r| &r[1..]).copied().collect()))
}

/// Runs forward/backward over `batches` (one optimizer step's micro-batches) and applies the
/// update for 0-based step `step`. A non-finite loss or gradient norm stops before the update,
/// so the parameters stay at their last good values.
pub fn train_step(
    model: &MambaLM,
    opt: &mut HybridOptimizer,
    batches: &[Batch],
    clip: f64,
    step: usize,
    device: &Device,
) -> Result<StepResult> {
    let rows = batches.iter().map(|b| b.micro_batch).sum();
    train_step_on_rank(model, opt, batches, clip, step, device, Shard { comm: None, global_rows: rows })
}

/// One rank's part of a data-parallel step (see `train::rank_group` and `parallel`): `comm` is
/// the rank's group (`None` on a single device) and `global_rows` the number of sequences in the
/// whole step over all ranks.
#[derive(Clone, Copy)]
pub struct Shard<'a> {
    pub comm: Option<&'a dyn Comm>,
    pub global_rows: usize,
}

/// [`train_step`] on one rank: each micro-batch's mean loss is weighted by its share of the
/// *global* rows, so the all-reduced sum of the ranks' gradients (and losses) is the global
/// batch's; every rank then clips by the same global norm and takes the same optimizer step.
/// A rank may get no micro-batch (follow mode's short last step): it contributes zeros.
#[allow(clippy::too_many_arguments)]
pub fn train_step_on_rank(
    model: &MambaLM,
    opt: &mut HybridOptimizer,
    batches: &[Batch],
    clip: f64,
    step: usize,
    device: &Device,
    shard: Shard,
) -> Result<StepResult> {
    let rows = shard.global_rows;
    if rows == 0 {
        bail!("train_step got no sequences");
    }
    // The phases are timed by marks on the device's work (events on a GPU), read at the end:
    // nothing in the micro-batch loop waits for the device, so the host prepares the next
    // micro-batch while the GPU runs this one.
    let mut marks = Vec::new(); // (forward start, backward start, backward end) per micro-batch
    let mut losses = Vec::new(); // each micro-batch's weighted loss, on the device
    let mut grads: Option<Vec<(String, Tensor)>> = None;
    // The matmul weights in the compute dtype, once for all micro-batches (fixed until the update).
    let weights = model.compute_weights()?;
    for batch in batches {
        // Inputs, targets and the embedding's token index, built on the host and uploaded.
        let (ids, targets) = batch_rows(batch)?;
        let index = mamba_ops::TokenIndex::from_host(&ids, model.config().padded_vocab(), device)?;
        let shape = (batch.micro_batch, batch.seq_len);
        let (inputs, targets) = (index.ids().reshape(shape)?, Tensor::from_vec(targets, shape, device)?);
        let weight = batch.micro_batch as f64 / rows as f64;
        let m0 = phase_clock::mark(device)?;
        // Forward, saving the activations for the hand-written backward (model/backward.rs).
        let (loss, saved) = model.forward_saved(&inputs, &targets, &weights, Some(index), weight)?; // ()
        losses.push(loss.to_dtype(DType::F64)?.affine(weight, 0.0)?);
        let m1 = phase_clock::mark(device)?;
        let store = model.backward(saved)?;
        marks.push((m0, m1, phase_clock::mark(device)?));
        let g = opt.grads_from_store(&store).context("collecting gradients")?;
        grads = Some(match grads {
            None => g,
            Some(acc) => accumulate(acc, g)?,
        });
    }
    let m2 = phase_clock::mark(device)?;
    let mut loss_sum = match losses.len() {
        0 => 0.0,
        _ => Tensor::stack(&losses, 0)?.sum_all()?.to_scalar::<f64>()?, // waits for the micro-batches
    };
    let (mut fwd_ms, mut bwd_ms) = (0f64, 0f64);
    for (a, b, c) in &marks {
        fwd_ms += phase_clock::elapsed_ms(a, b)?;
        bwd_ms += phase_clock::elapsed_ms(b, c)?;
    }
    let mut grads = match grads {
        Some(g) => g,
        None if shard.comm.is_some() => opt.zero_grads()?,
        None => bail!("no gradients"),
    };
    let mut sync_ms = 0.0;
    if let Some(comm) = shard.comm.filter(|c| c.world_size() > 1) {
        // Sum the ranks' losses and gradients: every rank now holds the global batch's.
        crate::parallel::all_reduce_grads(&mut grads, comm).context("all-reducing the gradients")?;
        let loss = comm.all_reduce_sum(&Tensor::new(&[loss_sum], device)?).context("all-reducing the loss")?;
        loss_sum = loss.to_vec1::<f64>()?[0]; // waits for both all-reduces
        sync_ms = phase_clock::elapsed_ms(&m2, &phase_clock::mark(device)?)?;
    }
    if !loss_sum.is_finite() {
        bail!(NonFinite { step, what: format!("loss is {loss_sum}") });
    }
    let grad_norm = clip_grad_norm(&mut grads, clip)?;
    if !grad_norm.is_finite() {
        bail!(NonFinite { step, what: format!("gradient norm is {grad_norm} (loss {loss_sum:.4})") });
    }
    let optim = opt.step_with(&grads, step, shard.comm).context("optimizer step")?;
    let opt_ms = phase_clock::elapsed_ms(&m2, &phase_clock::mark(device)?)?; // waits for the update
    Ok(StepResult { loss: loss_sum, grad_norm, rows, optim, fwd_ms, bwd_ms, opt_ms, sync_ms })
}

/// `acc + g` per parameter. The f32 contiguous sums are taken in `acc`'s own storage (the first
/// micro-batch's gradients, owned by this step), all in one op (`mamba_ops::add_in_place`: one
/// launch on the GPU instead of one per gradient); others are replaced by fresh sums.
fn accumulate(mut acc: Vec<(String, Tensor)>, g: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let fits = |a: &Tensor, b: &Tensor| {
        a.dtype() == DType::F32
            && b.dtype() == DType::F32
            && a.is_contiguous()
            && b.is_contiguous()
            && a.dims() == b.dims()
    };
    let (mut sum_acc, mut sum_g) = (Vec::new(), Vec::new());
    for ((_, a), (_, b)) in acc.iter_mut().zip(g) {
        if fits(a, &b) {
            sum_acc.push(a.clone());
            sum_g.push(b);
        } else {
            *a = (&*a + b)?;
        }
    }
    mamba_ops::add_in_place(&sum_acc, &sum_g).context("accumulating the micro-batches' gradients")?;
    Ok(acc)
}

/// A NaN/Inf loss or gradient: training stops without applying the update.
#[derive(Debug, thiserror::Error)]
#[error("step {step}: {what}; stopping without applying this update (parameters keep their last good values)")]
pub struct NonFinite {
    pub step: usize,
    pub what: String,
}
