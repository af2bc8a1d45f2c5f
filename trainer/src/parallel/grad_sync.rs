//! Gradient all-reduce for data-parallel training: every rank's gradients (the weighted sum over
//! its micro-batches) are summed over the ranks, so every rank ends up with the gradient of the
//! whole global batch and takes the identical optimizer step.
//!
//! Gradients are flattened into a few large buckets (consecutive parameters, at most
//! [`BUCKET_ELEMS`] elements each, one dtype per bucket) so the collective runs on a few large
//! messages instead of one per parameter, as PyTorch DDP does. candle computes the whole backward
//! at once (there are no per-parameter gradient hooks), so the all-reduce cannot overlap the
//! backward; it runs after it.

use candle_core::{DType, Tensor};

use super::comm::{Comm, CommError};

/// Largest bucket, in elements (64 MiB of f32): few messages, bounded extra memory.
pub const BUCKET_ELEMS: usize = 16 << 20;

/// Replaces every gradient by its sum over all ranks of `comm`. The micro-batch weights already
/// divide by the global number of sequences, so the sum is the global-batch gradient.
pub fn all_reduce_grads(grads: &mut [(String, Tensor)], comm: &dyn Comm) -> Result<(), CommError> {
    for range in buckets(grads) {
        let flat: Vec<Tensor> =
            grads[range.clone()].iter().map(|(_, g)| g.flatten_all()).collect::<candle_core::Result<_>>()?;
        let summed = comm.all_reduce_sum(&Tensor::cat(&flat, 0)?)?; // (n,)
        let mut offset = 0;
        for (_, g) in &mut grads[range] {
            let n = g.elem_count();
            *g = summed.narrow(0, offset, n)?.reshape(g.dims())?;
            offset += n;
        }
    }
    Ok(())
}

/// Consecutive index ranges of `grads` with one dtype and at most [`BUCKET_ELEMS`] elements each
/// (a larger single gradient is a bucket of its own).
fn buckets(grads: &[(String, Tensor)]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut elems, mut dtype): (usize, usize, Option<DType>) = (0, 0, None);
    for (i, (_, g)) in grads.iter().enumerate() {
        let full = elems > 0 && elems + g.elem_count() > BUCKET_ELEMS;
        if i > start && (full || dtype != Some(g.dtype())) {
            out.push(start..i);
            (start, elems) = (i, 0);
        }
        dtype = Some(g.dtype());
        elems += g.elem_count();
    }
    if start < grads.len() {
        out.push(start..grads.len());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::local::LocalComm;
    use super::*;
    use candle_core::Device;

    fn t(n: usize, dtype: DType) -> (String, Tensor) {
        ("g".into(), Tensor::zeros(n, dtype, &Device::Cpu).unwrap())
    }

    #[test]
    fn buckets_split_on_size_and_dtype() {
        let g =
            vec![t(10, DType::F32), t(BUCKET_ELEMS, DType::F32), t(5, DType::F32), t(5, DType::F64), t(3, DType::F64)];
        assert_eq!(buckets(&g), vec![0..1, 1..2, 2..3, 3..5]);
        assert!(buckets(&[]).is_empty());
    }

    #[test]
    fn grads_are_summed_over_ranks_and_keep_their_shapes() {
        let handles: Vec<_> = LocalComm::group(2)
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || {
                    let r = comm.rank() as f32;
                    let mut g = vec![
                        ("a".to_string(), Tensor::new(&[[1f32 + r, 2.0], [3.0, 4.0 * r]], &Device::Cpu).unwrap()),
                        ("b".to_string(), Tensor::new(&[10f32 * (r + 1.0)], &Device::Cpu).unwrap()),
                    ];
                    all_reduce_grads(&mut g, &comm).unwrap();
                    (g[0].1.to_vec2::<f32>().unwrap(), g[1].1.to_vec1::<f32>().unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), (vec![vec![3.0, 4.0], vec![6.0, 4.0]], vec![30.0]));
        }
    }
}
