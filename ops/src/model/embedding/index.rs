//! [`TokenIndex`]: the positions of every vocabulary row in a batch of token ids, as a CSR built
//! on the host by a stable counting sort. The embedding's backward ([`super::rows`]) reads it to
//! sum each row's gradients without atomics and without walking all positions per row.

use candle_core::{bail, DType, Result, Tensor};

const NAME: &str = "TokenIndex";

/// For token ids `(n,)` and a vocabulary of `V` rows: `offsets: (V+1,)` u32 and
/// `positions: (n,)` u32, on the ids' device, such that the positions holding id `v` are
/// `positions[offsets[v]..offsets[v+1]]`, in increasing order.
///
/// [`TokenIndex::new`] reads the ids back to the host (a wait for the device's queued work);
/// [`TokenIndex::from_host`] starts from the host's copy (the trainer's batches are on the host)
/// and uploads the ids with the index.
#[derive(Clone, Debug)]
pub struct TokenIndex {
    offsets: Tensor,   // (V+1,) u32
    positions: Tensor, // (n,) u32
    ids: Tensor,       // (n,) u32, contiguous: the fallback paths' index_add reads it
    n: usize,
    vocab: usize,
}

impl TokenIndex {
    /// The index of `ids: (n,)` u32 (any device) for a vocabulary of `vocab` rows. Errors for
    /// ids of another rank or dtype, an empty vocabulary, an id `>= vocab` (naming the id and
    /// its position) and `n >= 2^32`.
    pub fn new(ids: &Tensor, vocab: usize) -> Result<Self> {
        let n = match ids.dims() {
            &[n] => n,
            other => bail!("{NAME}: `ids` must be 1-D (positions,), got shape {other:?}"),
        };
        if ids.dtype() != DType::U32 {
            bail!("{NAME}: `ids` must be u32, got {:?}", ids.dtype())
        }
        if vocab == 0 || u32::try_from(vocab).is_err() {
            bail!("{NAME}: the vocabulary must have 1 to 2^32 - 1 rows, got {vocab}")
        }
        if u32::try_from(n).is_err() {
            bail!("{NAME}: {n} positions do not fit the u32 offsets (at most 2^32 - 1)")
        }
        let host = ids.to_vec1::<u32>()?; // (n,)
        Self::build(&host, ids.contiguous()?, vocab)
    }

    /// The index of the ids `host` for a vocabulary of `vocab` rows, on `device`, where it also
    /// uploads the ids ([`TokenIndex::ids`]): no read back from the device. Errors as
    /// [`TokenIndex::new`].
    pub fn from_host(host: &[u32], vocab: usize, device: &candle_core::Device) -> Result<Self> {
        if vocab == 0 || u32::try_from(vocab).is_err() {
            bail!("{NAME}: the vocabulary must have 1 to 2^32 - 1 rows, got {vocab}")
        }
        if u32::try_from(host.len()).is_err() {
            bail!("{NAME}: {} positions do not fit the u32 offsets (at most 2^32 - 1)", host.len())
        }
        Self::build(host, Tensor::from_slice(host, host.len(), device)?, vocab)
    }

    /// The CSR of `host` on `ids`' device, `ids` being `host` there.
    fn build(host: &[u32], ids: Tensor, vocab: usize) -> Result<Self> {
        let n = host.len();
        let (offsets, positions) = csr(host, vocab)?;
        let dev = ids.device();
        Ok(TokenIndex {
            offsets: Tensor::from_vec(offsets, vocab + 1, dev)?,
            positions: Tensor::from_vec(positions, n, dev)?,
            ids,
            n,
            vocab,
        })
    }

    /// `(V+1,)` u32: row `v`'s positions are `positions[offsets[v]..offsets[v+1]]`.
    pub fn offsets(&self) -> &Tensor {
        &self.offsets
    }

    /// `(n,)` u32: the positions grouped by id, each group in increasing order.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// The ids the index was built from, `(n,)` u32, contiguous.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// The number of positions `n`.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// The number of vocabulary rows `V`.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

/// `(offsets, positions)` of `ids` by a stable counting sort (callers checked `n, vocab < 2^32`).
fn csr(ids: &[u32], vocab: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut offsets = vec![0u32; vocab + 1];
    for (p, &id) in ids.iter().enumerate() {
        match offsets.get_mut(id as usize + 1) {
            Some(count) => *count += 1,
            None => bail!("{NAME}: id {id} at position {p} is out of range for a vocabulary of {vocab}"),
        }
    }
    let mut sum = 0;
    for o in offsets.iter_mut() {
        sum += *o; // offsets[v] = the number of ids < v
        *o = sum;
    }
    // Each id's next free slot; positions are visited in increasing order, so each group is too.
    let mut next = offsets.clone();
    let mut positions = vec![0u32; ids.len()];
    for (p, &id) in ids.iter().enumerate() {
        let slot = &mut next[id as usize];
        positions[*slot as usize] = p as u32;
        *slot += 1;
    }
    Ok((offsets, positions))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn csr_groups_positions_by_id_in_order() {
        let (offsets, positions) = super::csr(&[2, 0, 2, 3, 0, 2], 5).unwrap();
        assert_eq!(offsets, [0, 2, 2, 5, 6, 6]);
        assert_eq!(positions, [1, 4, 0, 2, 5, 3]);
    }

    #[test]
    fn from_host_equals_new() {
        let dev = candle_core::Device::Cpu;
        let ids = [2u32, 0, 2, 3, 0, 2];
        let (a, b) = (
            super::TokenIndex::from_host(&ids, 5, &dev).unwrap(),
            super::TokenIndex::new(&candle_core::Tensor::new(&ids[..], &dev).unwrap(), 5).unwrap(),
        );
        for (x, y) in [(a.offsets(), b.offsets()), (a.positions(), b.positions()), (a.ids(), b.ids())] {
            assert_eq!(x.to_vec1::<u32>().unwrap(), y.to_vec1::<u32>().unwrap());
        }
        let e = super::TokenIndex::from_host(&[1, 7], 5, &dev).unwrap_err().to_string();
        assert!(e.contains('7'), "{e}");
    }
}
