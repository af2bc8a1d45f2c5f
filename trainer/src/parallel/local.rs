//! [`LocalComm`]: the collectives of [`Comm`] between threads of one process, on CPU memory.
//! Each collective is a rendezvous: every rank leaves its tensor, the last one to arrive combines
//! them **in rank order** (a left fold `((t0 + t1) + t2) …` for the sum, so the result does not
//! depend on thread timing) and wakes the others, who all receive a copy of that one result.
//!
//! It is what the tests use to check data-parallel training against a single device, and what
//! `trainer train --devices cpu,cpu` runs on. Tensors on another device are copied to the CPU and
//! back, so it also works (slowly) with CUDA tensors, but NCCL is the GPU path.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};

use super::comm::{Comm, CommError};

/// Which collective a rank is in, with its tensor's shape and dtype: all ranks must agree.
#[derive(Clone, Debug, PartialEq)]
struct Signature {
    op: &'static str,
    dims: Vec<usize>,
    dtype: DType,
}

#[derive(Default)]
struct State {
    /// Completed collectives so far; a waiting rank is released when it changes.
    generation: u64,
    /// The first arriver's signature in the collective under way.
    signature: Option<Signature>,
    inputs: Vec<Option<Tensor>>,
    arrived: usize,
    /// The result of the last completed collective (read by every rank before it can start the
    /// next one, so it cannot be overwritten too early).
    result: Option<Tensor>,
    /// Set by [`Comm::abort`] or by a mismatch: every call fails from then on.
    aborted: Option<String>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
    changed: Condvar,
}

/// One rank of an in-process group; create the whole group with [`LocalComm::group`].
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalComm {
    /// The `world` ranks of a new group (index = rank). Hand one to each thread.
    pub fn group(world: usize) -> Vec<LocalComm> {
        let state = State { inputs: vec![None; world], ..State::default() };
        let shared = Arc::new(Shared { world, state: Mutex::new(state), changed: Condvar::new() });
        (0..world).map(|rank| LocalComm { rank, shared: shared.clone() }).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock cannot have left the state half-written in
        // a way that matters more than its absence: the others time out on `aborted` or proceed.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rendezvous shared by all collectives: leave `t`, wait for the others, return the
    /// combined result (moved back to `t`'s device).
    fn collective(
        &self,
        op: &'static str,
        t: &Tensor,
        combine: fn(&[Tensor]) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor, CommError> {
        let device = t.device().clone();
        let input = t.to_device(&Device::Cpu)?;
        let sig = Signature { op, dims: t.dims().to_vec(), dtype: t.dtype() };
        let mut s = self.lock();
        if let Some(reason) = &s.aborted {
            return Err(CommError::Aborted { rank: self.rank, reason: reason.clone() });
        }
        match &s.signature {
            None => s.signature = Some(sig),
            Some(first) if *first != sig => {
                let what = format!(
                    "rank {} called {op} {:?} {:?} while another rank called {} {:?} {:?}",
                    self.rank, sig.dims, sig.dtype, first.op, first.dims, first.dtype
                );
                s.aborted = Some(what.clone());
                self.shared.changed.notify_all();
                return Err(CommError::Mismatch { rank: self.rank, what });
            }
            Some(_) => {}
        }
        s.inputs[self.rank] = Some(input);
        s.arrived += 1;
        let mine = s.generation;
        if s.arrived == self.shared.world {
            let inputs: Vec<Tensor> = s.inputs.iter_mut().filter_map(Option::take).collect();
            match combine(&inputs) {
                Ok(out) => s.result = Some(out),
                Err(e) => {
                    s.aborted = Some(format!("{op} failed: {e}"));
                    self.shared.changed.notify_all();
                    return Err(e.into());
                }
            }
            s.arrived = 0;
            s.signature = None;
            s.generation += 1;
            self.shared.changed.notify_all();
        } else {
            while s.generation == mine && s.aborted.is_none() {
                s = self.shared.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.generation == mine {
                let reason = s.aborted.clone().unwrap_or_default();
                return Err(CommError::Aborted { rank: self.rank, reason });
            }
        }
        let out = s.result.clone().ok_or_else(|| CommError::Aborted { rank: self.rank, reason: "no result".into() })?;
        drop(s);
        // Each rank gets a tensor of its own: the ranks then update their gradients in place
        // (the clipping's scale), which must not reach another rank's through shared storage.
        Ok(if device.is_cpu() { out.copy()? } else { out.to_device(&device)? })
    }
}

/// A rank that goes away (its thread ended or panicked) aborts the group, so the others fail
/// instead of waiting for it. Harmless after the last collective: a rank that already got that
/// collective's result does not look at `aborted` again.
impl Drop for LocalComm {
    fn drop(&mut self) {
        let why = if std::thread::panicking() { "its thread panicked" } else { "it left the group" };
        self.abort(why);
    }
}

/// `((t0 + t1) + t2) + …`: a fixed order, so every run gives the same bits.
fn sum_in_rank_order(ts: &[Tensor]) -> candle_core::Result<Tensor> {
    let mut acc = ts[0].clone();
    for t in &ts[1..] {
        acc = (acc + t)?;
    }
    Ok(acc)
}

fn concat_in_rank_order(ts: &[Tensor]) -> candle_core::Result<Tensor> {
    Tensor::cat(ts, 0)
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, CommError> {
        self.collective("all_reduce_sum", t, sum_in_rank_order)
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, CommError> {
        if t.rank() == 0 {
            return Err(CommError::Mismatch { rank: self.rank, what: "all_gather needs a tensor of rank >= 1".into() });
        }
        self.collective("all_gather", t, concat_in_rank_order)
    }

    fn abort(&self, reason: &str) {
        let mut s = self.lock();
        if s.aborted.is_none() {
            s.aborted = Some(format!("rank {}: {reason}", self.rank));
        }
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs `f(rank, comm)` on one thread per rank and returns the results in rank order.
    fn on_ranks<T: Send + 'static>(world: usize, f: impl Fn(usize, LocalComm) -> T + Send + Sync + 'static) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = LocalComm::group(world)
            .into_iter()
            .enumerate()
            .map(|(r, c)| {
                let f = f.clone();
                std::thread::spawn(move || f(r, c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_and_all_gather_in_rank_order_many_times() {
        let out = on_ranks(3, |r, comm| {
            let mut got = Vec::new();
            for round in 0..50u32 {
                let t = Tensor::new(&[r as f32 + round as f32, 10.0 * r as f32], &Device::Cpu).unwrap();
                let s = comm.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
                let g = comm.all_gather(&t.reshape((1, 2)).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                got.push((s, g));
            }
            got
        });
        for (round, per_rank) in (0..50).map(|i| (i as f32, out.iter().map(move |v| &v[i]))) {
            for (s, g) in per_rank {
                assert_eq!(s, &vec![3.0 * round + 3.0, 30.0]);
                assert_eq!(g, &vec![vec![round, 0.0], vec![round + 1.0, 10.0], vec![round + 2.0, 20.0]]);
            }
        }
    }

    #[test]
    fn every_rank_gets_its_own_result() {
        // Rank 0 doubles its result in place; rank 1's must not change with it: the second sum
        // is then 2·3 + 3 = 9 (it would be 12 if the ranks shared one tensor).
        let out = on_ranks(2, |r, comm| {
            let s = comm.all_reduce_sum(&Tensor::new(&[r as f32 + 1.0], &Device::Cpu).unwrap()).unwrap();
            if r == 0 {
                mamba_ops::scale_in_place(std::slice::from_ref(&s), 2.0).unwrap();
            }
            comm.all_reduce_sum(&s).unwrap().to_vec1::<f32>().unwrap()
        });
        assert_eq!(out, vec![vec![9.0], vec![9.0]]);
    }

    #[test]
    fn the_sum_is_a_left_fold_in_rank_order() {
        // 1e8 + 1 - 1e8 in f32 is 0 when summed left to right; any other order could give 1.
        let vals = [1e8f32, 1.0, -1e8];
        let out = on_ranks(3, move |r, comm| {
            comm.all_reduce_sum(&Tensor::new(&[vals[r]], &Device::Cpu).unwrap()).unwrap().to_vec1::<f32>().unwrap()
        });
        assert!(out.iter().all(|v| v == &vec![0.0]), "{out:?}");
    }

    #[test]
    fn a_mismatch_or_an_abort_fails_every_rank_instead_of_hanging() {
        let out = on_ranks(2, |r, comm| {
            comm.all_reduce_sum(&Tensor::zeros(r + 1, DType::F32, &Device::Cpu).unwrap()).err().map(|e| e.to_string())
        });
        assert!(
            out.iter().all(|e| e.as_deref().is_some_and(|e| e.contains("mismatch") || e.contains("aborted"))),
            "{out:?}"
        );
        let out = on_ranks(3, |r, comm| {
            if r == 1 {
                comm.abort("out of memory");
                return None;
            }
            comm.all_gather(&Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap()).err().map(|e| e.to_string())
        });
        for e in [&out[0], &out[2]] {
            assert!(e.as_deref().is_some_and(|e| e.contains("rank 1: out of memory")), "{out:?}");
        }
        // A rank that ends (returns or panics) without joining the collective releases the others.
        let out = on_ranks(2, |r, comm| {
            if r == 1 {
                drop(comm);
                return None;
            }
            comm.all_reduce_sum(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).err().map(|e| e.to_string())
        });
        assert!(out[0].as_deref().is_some_and(|e| e.contains("rank 1: it left the group")), "{out:?}");
    }
}
