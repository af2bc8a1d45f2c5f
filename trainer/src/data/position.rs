//! [`DataPosition`]: where the loader stands in the token stream, exactly. It is saved in every
//! checkpoint, and `TrainData::open(spec, Some(pos))` continues with the very batch an
//! uninterrupted run would have produced next.
//!
//! A position always names the *next* chunk to read, in one canonical form (the end of an epoch
//! is written as the start of the next epoch, the end of a shard as chunk 0 of the following
//! seq), so a run that stops at a boundary and one that runs on agree on what comes next.

use serde::{Deserialize, Serialize};

use super::error::DataError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// The `--seed` the chunk orders are drawn from; a resume with another seed is refused.
    pub seed: u64,
    pub cursor: Cursor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Cursor {
    /// Static mode: the next chunk is entry `index` of epoch `epoch`'s permutation of all
    /// `total_chunks` chunks of the `n_shards` train shards (both checked on resume: another shard
    /// set would be another permutation).
    Static { epoch: u64, index: u64, total_chunks: u64, n_shards: u64 },
    /// Follow mode: the next chunk is entry `chunk` of train shard `shard`'s own shuffled order.
    /// With `chunk == 0` nothing of that shard has been read yet and the loader takes the first
    /// published train shard with seq >= `shard`. Every train shard below `shard` is done with.
    Follow { shard: u64, chunk: u64 },
}

impl DataPosition {
    pub fn start_static(seed: u64, total_chunks: u64, n_shards: u64) -> Self {
        DataPosition { seed, cursor: Cursor::Static { epoch: 0, index: 0, total_chunks, n_shards } }
    }

    pub fn start_follow(seed: u64, shard: u64) -> Self {
        DataPosition { seed, cursor: Cursor::Follow { shard, chunk: 0 } }
    }

    /// The static position after reading entry `index` of epoch `epoch` (canonical form).
    pub fn static_after(seed: u64, epoch: u64, index: u64, total_chunks: u64, n_shards: u64) -> Self {
        let (epoch, index) = if index + 1 >= total_chunks { (epoch + 1, 0) } else { (epoch, index + 1) };
        DataPosition { seed, cursor: Cursor::Static { epoch, index, total_chunks, n_shards } }
    }

    /// The follow position after reading entry `k` of shard `shard`'s order of `n` chunks.
    pub fn follow_after(seed: u64, shard: u64, k: u64, n: u64) -> Self {
        let cursor = if k + 1 >= n {
            Cursor::Follow { shard: shard + 1, chunk: 0 }
        } else {
            Cursor::Follow { shard, chunk: k + 1 }
        };
        DataPosition { seed, cursor }
    }

    /// Static mode's epoch; 0 in follow mode (every chunk is read once).
    pub fn epoch(&self) -> u64 {
        match self.cursor {
            Cursor::Static { epoch, .. } => epoch,
            Cursor::Follow { .. } => 0,
        }
    }

    /// Follow mode: every train shard with a smaller seq is no longer needed by this position.
    pub fn follow_shard(&self) -> Option<u64> {
        match self.cursor {
            Cursor::Follow { shard, .. } => Some(shard),
            Cursor::Static { .. } => None,
        }
    }

    /// Refuses a resume position made with another seed or in the other mode.
    pub fn check_resume(&self, seed: u64, follow: bool) -> Result<(), DataError> {
        if self.seed != seed {
            return Err(DataError::ResumeMismatch {
                what: format!("it was drawn with --seed {}, this run has --seed {seed}", self.seed),
            });
        }
        match (self.cursor, follow) {
            (Cursor::Static { .. }, true) => Err(DataError::ResumeMismatch {
                what: "the checkpoint was trained in static mode, this run has --follow".into(),
            }),
            (Cursor::Follow { .. }, false) => Err(DataError::ResumeMismatch {
                what: "the checkpoint was trained with --follow, this run is in static mode".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for DataPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cursor {
            Cursor::Static { epoch, index, total_chunks, .. } => {
                write!(f, "static epoch {epoch} chunk {index}/{total_chunks}")
            }
            Cursor::Follow { shard, chunk } => write!(f, "follow shard {shard} chunk {chunk}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_canonical_at_boundaries() {
        assert_eq!(DataPosition::static_after(1, 0, 9, 10, 2), DataPosition::start_static(1, 10, 2).with_epoch(1));
        assert_eq!(DataPosition::follow_after(1, 4, 2, 3), DataPosition::start_follow(1, 5));
        assert_eq!(DataPosition::follow_after(1, 4, 0, 3).cursor, Cursor::Follow { shard: 4, chunk: 1 });
    }

    #[test]
    fn json_round_trip_and_resume_checks() {
        let p = DataPosition { seed: 7, cursor: Cursor::Static { epoch: 2, index: 5, total_chunks: 9, n_shards: 1 } };
        let s = serde_json::to_string(&p).unwrap();
        assert!(s.contains("\"mode\":\"static\""), "{s}");
        assert_eq!(serde_json::from_str::<DataPosition>(&s).unwrap(), p);
        assert!(p.check_resume(7, false).is_ok());
        assert!(matches!(p.check_resume(8, false), Err(DataError::ResumeMismatch { .. })));
        assert!(matches!(p.check_resume(7, true), Err(DataError::ResumeMismatch { .. })));
        assert!(matches!(
            DataPosition::start_follow(7, 0).check_resume(7, false),
            Err(DataError::ResumeMismatch { .. })
        ));
    }

    impl DataPosition {
        fn with_epoch(mut self, e: u64) -> Self {
            if let Cursor::Static { epoch, .. } = &mut self.cursor {
                *epoch = e;
            }
            self
        }
    }
}
