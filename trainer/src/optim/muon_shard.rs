//! Distributed Muon, as in modded-nanogpt (KellerJordan/modded-nanogpt, `Muon.step`): the
//! Newton–Schulz orthogonalization, the expensive part of Muon, is split over the ranks. The
//! matrices of one shape group are padded to a multiple of the world size, each rank
//! orthogonalizes its contiguous share, and an all-gather hands every rank all the results, so
//! every rank applies the identical update while the optimizer's cost shrinks with the number of
//! GPUs. (Momentum is still computed on every rank for every matrix: it is cheap, and it keeps
//! the full optimizer state on rank 0, which writes the checkpoints.)

use candle_core::Tensor;

use super::newton_schulz::newton_schulz_batched;
use crate::parallel::{Comm, CommError};

/// The members `[start, start + len)` of a group of `k` that `rank` of `world` orthogonalizes,
/// and the padded share size every rank contributes to the all-gather (`ceil(k / world)`).
pub fn share(k: usize, rank: usize, world: usize) -> (usize, usize, usize) {
    let per = k.div_ceil(world.max(1));
    let start = (rank * per).min(k);
    let end = ((rank + 1) * per).min(k);
    (start, end - start, per)
}

/// Newton–Schulz for the stacked `(k, r, c)` matrices `u` (Muon's look-ahead in the NS dtype,
/// normalized by the first iteration), `ns_steps` iterations, with each rank of `comm` doing its
/// share; returns `(k, r, c)` in u's dtype on every rank.
pub fn orthogonalize_sharded(u: &Tensor, ns_steps: usize, comm: &dyn Comm) -> Result<Tensor, CommError> {
    let (k, r, c) = u.dims3()?;
    let ns_dtype = u.dtype();
    let (start, len, per) = share(k, comm.rank(), comm.world_size());
    let mine = if len > 0 {
        Some(newton_schulz_batched(&u.narrow(0, start, len)?, ns_steps)?) // (len, r, c)
    } else {
        None
    };
    // Pad to `per` so every rank sends the same shape (the pad is dropped after the gather; no
    // empty tensor is made: a zero-byte CUDA allocation is an error).
    let zeros = |n: usize| Tensor::zeros((n, r, c), ns_dtype, u.device());
    let sent = match mine {
        Some(m) if len == per => m,
        Some(m) => Tensor::cat(&[m, zeros(per - len)?], 0)?,
        None => zeros(per)?,
    }; // (per, r, c)
    let all = comm.all_gather(&sent.contiguous()?)?; // (world · per, r, c)
    Ok(all.narrow(0, 0, k)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::parallel::LocalComm;
    use candle_core::Device;

    #[test]
    fn shares_cover_the_group_once() {
        for k in 1..9 {
            for world in 1..5 {
                let mut covered = Vec::new();
                for rank in 0..world {
                    let (start, len, per) = share(k, rank, world);
                    assert!(len <= per && per * world >= k && per * world < k + world);
                    covered.extend(start..start + len);
                }
                assert_eq!(covered, (0..k).collect::<Vec<_>>(), "k {k} world {world}");
            }
        }
    }

    #[test]
    fn sharded_equals_single_rank_for_any_world() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (k, r, c) = (5, 12, 8);
        let data: Vec<f32> = (0..k * r * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let u = Tensor::from_vec(data, (k, r, c), &Device::Cpu).unwrap();
        let want = newton_schulz_batched(&u, 5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for world in [1, 2, 3, 4, 7] {
            let handles: Vec<_> = LocalComm::group(world)
                .into_iter()
                .map(|comm| {
                    let u = u.clone();
                    std::thread::spawn(move || {
                        orthogonalize_sharded(&u, 5, &comm).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    })
                })
                .collect();
            for h in handles {
                let got = h.join().unwrap();
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err < 1e-6, "world {world}: {err}");
            }
        }
    }
}
