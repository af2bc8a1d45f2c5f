//! One optimizer step with gradient accumulation: forward + backward over each micro-batch,
//! gradients summed, the loss being the mean over every target token of the effective batch
//! (each micro-batch's mean loss is weighted by its share of the rows: 1/accum when all are full),
//! then global-norm clipping and the hybrid optimizer's update.
//! Micro-batch size is only a throughput knob: 1×4, 2×2 and 4×1 give the same update.

use anyhow::{bail, Context, Result};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::data::Batch;
use crate::dist::Comm;
use crate::model::MambaLM;
use crate::optim::{clip_grad_norm, HybridOptimizer, StepStats};

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
    /// Forward, backward (summed over micro-batches) and all-reduce + clip + update times, ms
    /// (device synced; forward and backward are rank 0's own).
    pub fwd_ms: f64,
    pub bwd_ms: f64,
    pub opt_ms: f64,
    /// Of `opt_ms`: the all-reduce of the loss and gradients (0 on a single device), ms.
    pub sync_ms: f64,
}

/// Inputs `(rows, seq_len)` and targets `(rows, seq_len)` of a batch of `seq_len + 1`-token chunks.
pub fn batch_tensors(batch: &Batch, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let chunk = seq_len + 1;
    if batch.tokens.len() != batch.micro_batch * chunk {
        bail!("batch holds {} tokens, expected {} rows of {chunk}", batch.tokens.len(), batch.micro_batch);
    }
    let all = Tensor::from_slice(&batch.tokens, (batch.micro_batch, chunk), device)?; // (b, l+1)
    let inputs = all.narrow(1, 0, seq_len)?.contiguous()?; // (b, l)
    let targets = all.narrow(1, 1, seq_len)?.contiguous()?; // (b, l)
    Ok((inputs, targets))
}

/// Runs forward/backward over `batches` (one optimizer step's micro-batches) and applies the
/// update for 0-based step `step`. A non-finite loss or gradient norm stops before the update,
/// so the parameters stay at their last good values.
pub fn train_step(model: &MambaLM, opt: &mut HybridOptimizer, batches: &[Batch], seq_len: usize, clip: f64, step: usize, device: &Device) -> Result<StepResult> {
    let rows = batches.iter().map(|b| b.micro_batch).sum();
    train_step_on_rank(model, opt, batches, seq_len, clip, step, device, Shard { comm: None, global_rows: rows })
}

/// One rank's part of a data-parallel step (see `dist`): `comm` is the rank's group (`None` on a
/// single device) and `global_rows` the number of sequences in the whole step over all ranks.
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
pub fn train_step_on_rank(model: &MambaLM, opt: &mut HybridOptimizer, batches: &[Batch], seq_len: usize, clip: f64, step: usize, device: &Device, shard: Shard) -> Result<StepResult> {
    let rows = shard.global_rows;
    if rows == 0 {
        bail!("train_step got no sequences");
    }
    let mut loss_sum = 0f64;
    let (mut fwd_ms, mut bwd_ms) = (0f64, 0f64);
    let mut grads: Option<Vec<(String, Tensor)>> = None;
    for batch in batches {
        let (inputs, targets) = batch_tensors(batch, seq_len, device)?;
        let weight = batch.micro_batch as f64 / rows as f64;
        let t0 = Instant::now();
        // Forward, saving the activations for the hand-written backward (model/backward.rs).
        let (loss, saved) = model.forward_saved(&inputs, &targets)?; // ()
        loss_sum += loss.affine(weight, 0.0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        fwd_ms += t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let store = model.backward(saved, weight)?;
        device.synchronize()?;
        bwd_ms += t1.elapsed().as_secs_f64() * 1e3;
        let g = opt.grads_from_store(&store).context("collecting gradients")?;
        grads = Some(match grads {
            None => g,
            Some(acc) => accumulate(acc, g)?,
        });
    }
    let t2 = Instant::now();
    let mut grads = match grads {
        Some(g) => g,
        None if shard.comm.is_some() => opt.zero_grads()?,
        None => bail!("no gradients"),
    };
    let mut sync_ms = 0.0;
    if let Some(comm) = shard.comm.filter(|c| c.world_size() > 1) {
        // Sum the ranks' losses and gradients: every rank now holds the global batch's.
        crate::dist::all_reduce_grads(&mut grads, comm).context("all-reducing the gradients")?;
        let loss = comm.all_reduce_sum(&Tensor::new(&[loss_sum], device)?).context("all-reducing the loss")?;
        loss_sum = loss.to_vec1::<f64>()?[0]; // waits for both all-reduces
        sync_ms = t2.elapsed().as_secs_f64() * 1e3;
    }
    if !loss_sum.is_finite() {
        bail!(NonFinite { step, what: format!("loss is {loss_sum}") });
    }
    let grad_norm = clip_grad_norm(&mut grads, clip)?;
    if !grad_norm.is_finite() {
        bail!(NonFinite { step, what: format!("gradient norm is {grad_norm} (loss {loss_sum:.4})") });
    }
    let optim = opt.step_with(&grads, step, shard.comm).context("optimizer step")?;
    device.synchronize()?;
    let opt_ms = t2.elapsed().as_secs_f64() * 1e3;
    Ok(StepResult { loss: loss_sum, grad_norm, rows, optim, fwd_ms, bwd_ms, opt_ms, sync_ms })
}

/// `acc + g` per parameter. The f32 contiguous sums are taken in `acc`'s own storage (the first
/// micro-batch's gradients, owned by this step), all in one op (`mamba_ops::add_in_place`: one
/// launch on the GPU instead of one per gradient); others are replaced by fresh sums.
fn accumulate(mut acc: Vec<(String, Tensor)>, g: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let fits = |a: &Tensor, b: &Tensor| a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.is_contiguous() && b.is_contiguous() && a.dims() == b.dims();
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
