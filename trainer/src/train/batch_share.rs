//! Which rank trains on which micro-batch of a global step.
//!
//! One loader (on rank 0's thread) reads the step's `grad_accum × world` micro-batches in the
//! same order a single device with `grad_accum × world` accumulation would, and rank `r` takes
//! micro-batches `r, r + W, r + 2W, …` (round robin). The union of a step's sequences is
//! therefore exactly the single-device step's, the data position saved in checkpoints is global
//! (a run resumes on any number of devices), and a short last step (follow mode) still spreads
//! over the ranks.

use crate::data::Batch;

/// `batches` dealt round robin to `world` ranks: element `r` holds rank `r`'s micro-batches, in
/// stream order. Ranks past the end of a short step get none.
pub fn share_batches(batches: Vec<Batch>, world: usize) -> Vec<Vec<Batch>> {
    let mut out: Vec<Vec<Batch>> = (0..world.max(1)).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        out[i % world.max(1)].push(b);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::DataPosition;
    use std::time::Duration;

    fn batch(id: u32) -> Batch {
        Batch {
            tokens: vec![id],
            micro_batch: 1,
            seq_len: 0,
            position_after: DataPosition::start_static(0, 1, 1),
            chunks: Vec::new(),
            wait: Duration::ZERO,
        }
    }

    #[test]
    fn round_robin_covers_every_batch_once_in_order() {
        let ids = |v: &Vec<Batch>| v.iter().map(|b| b.tokens[0]).collect::<Vec<_>>();
        let shares = share_batches((0..7).map(batch).collect(), 3);
        assert_eq!(shares.iter().map(ids).collect::<Vec<_>>(), vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        let shares = share_batches((0..1).map(batch).collect(), 2);
        assert_eq!(shares.iter().map(ids).collect::<Vec<_>>(), vec![vec![0], vec![]]);
        assert_eq!(
            share_batches((0..4).map(batch).collect(), 1).iter().map(ids).collect::<Vec<_>>(),
            vec![vec![0, 1, 2, 3]]
        );
    }
}
