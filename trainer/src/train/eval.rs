//! Validation loss: the mean next-token loss over a fixed set of val chunks, evaluated in
//! micro-batches (every chunk has the same length, so the mean of chunk means is the token mean).

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::model::MambaLM;

pub fn eval_loss(model: &MambaLM, chunks: &[Vec<u32>], micro_batch: usize, device: &Device) -> Result<Option<f64>> {
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut sum = 0f64;
    for group in chunks.chunks(micro_batch.max(1)) {
        let chunk = group[0].len();
        let flat: Vec<u32> = group.iter().flat_map(|c| c.iter().copied()).collect();
        let all = Tensor::from_vec(flat, (group.len(), chunk), device)?; // (b, l+1)
        let inputs = all.narrow(1, 0, chunk - 1)?.contiguous()?; // (b, l)
        let targets = all.narrow(1, 1, chunk - 1)?.contiguous()?; // (b, l)
        let loss = model.loss(&inputs, &targets)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        sum += loss * group.len() as f64;
    }
    Ok(Some(sum / chunks.len() as f64))
}
