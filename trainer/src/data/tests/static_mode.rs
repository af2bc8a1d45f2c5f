//! Static mode: seeded epochs over all chunks, determinism, exact resume.

use std::collections::BTreeSet;

use mamba_shards::format::Split;

use super::*;
use crate::data::{Cursor, DataError, DataPosition};

/// Shards of 5, 0 (empty), 7 and 4 chunks: 16 chunks in all.
fn corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_train_shards(dir.path(), &[5, 0, 7, 4]);
    // Val shards and temporaries are not train data.
    write_shard(dir.path(), Split::Val, 0, 3);
    std::fs::write(dir.path().join(".train-00000004.shard.tmp"), b"partial").unwrap();
    dir
}

fn every_chunk() -> BTreeSet<(u64, usize)> {
    [(0u64, 5usize), (2, 7), (3, 4)].iter().flat_map(|&(s, n)| (0..n).map(move |k| (s, k))).collect()
}

#[test]
fn static_epochs_cover_every_chunk_once_and_differ_per_epoch_and_seed() {
    let dir = corpus();
    // micro_batch 3 does not divide 16, so batches span epoch boundaries.
    let mut data = TrainData::open(spec(dir.path(), false, 3, 11), None).unwrap();
    assert_eq!(data.ring_status(), "static 0/16 chunks epoch 0");
    let ids = all_rows(&take(&mut data, 16)); // 48 rows = 3 epochs
    let epochs: Vec<&[(u64, usize)]> = ids.chunks(16).collect();
    for (e, rows) in epochs.iter().enumerate() {
        assert_eq!(rows.iter().copied().collect::<BTreeSet<_>>(), every_chunk(), "epoch {e}");
        assert_eq!(rows.len(), 16);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    assert_eq!(data.epoch(), 3);
    assert_eq!(data.ring_status(), "static 0/16 chunks epoch 3");

    let mut other_seed = TrainData::open(spec(dir.path(), false, 3, 12), None).unwrap();
    let other = all_rows(&take(&mut other_seed, 6));
    assert_ne!(other[..16], ids[..16]);

    // Deterministic: a second loader with the same seed yields the same batches.
    let mut again = TrainData::open(spec(dir.path(), false, 3, 11), None).unwrap();
    assert_eq!(all_rows(&take(&mut again, 16)), ids);
}

#[test]
fn static_positions_count_consumed_batches_only() {
    let dir = corpus();
    let mut data = TrainData::open(spec(dir.path(), false, 4, 1), None).unwrap();
    let b = take(&mut data, 5);
    // The prefetch thread is ahead, but the position is the one after the 5th batch.
    let expected =
        DataPosition { seed: 1, cursor: Cursor::Static { epoch: 1, index: 4, total_chunks: 16, n_shards: 4 } };
    assert_eq!(b[4].position_after, expected);
    assert_eq!(data.position(), &expected);
    assert_eq!(b[3].position_after.cursor, Cursor::Static { epoch: 1, index: 0, total_chunks: 16, n_shards: 4 });
    assert_eq!(data.ring_status(), "static 4/16 chunks epoch 1");
}

#[test]
fn static_resume_mid_epoch_gives_the_identical_continuation() {
    let dir = corpus();
    let s = spec(dir.path(), false, 3, 5);
    let mut straight = TrainData::open(s.clone(), None).unwrap();
    let reference: Vec<Vec<u32>> = take(&mut straight, 14).into_iter().map(|b| b.tokens).collect();
    drop(straight);
    for cut in [1, 5, 6, 10] {
        let mut first = TrainData::open(s.clone(), None).unwrap();
        let before = take(&mut first, cut);
        let saved = serde_json::to_string(&before[cut - 1].position_after).unwrap();
        drop(first); // kill the run, its staged batches are lost
        let pos: DataPosition = serde_json::from_str(&saved).unwrap();
        let mut resumed = TrainData::open(s.clone(), Some(pos)).unwrap();
        let after: Vec<Vec<u32>> = take(&mut resumed, 14 - cut).into_iter().map(|b| b.tokens).collect();
        let joined: Vec<Vec<u32>> = before.into_iter().map(|b| b.tokens).chain(after).collect();
        assert_eq!(joined, reference, "resume after batch {cut}");
    }
}

#[test]
fn static_resume_refuses_another_shard_set_or_seed() {
    let dir = corpus();
    let mut data = TrainData::open(spec(dir.path(), false, 2, 5), None).unwrap();
    let pos = take(&mut data, 3).pop().unwrap().position_after;
    drop(data);
    let e = TrainData::open(spec(dir.path(), false, 2, 6), Some(pos.clone())).err().unwrap();
    assert!(matches!(e, DataError::ResumeMismatch { .. }) && e.to_string().contains("--seed 5"), "{e}");
    let e = TrainData::open(spec(dir.path(), true, 2, 5), Some(pos.clone())).err().unwrap();
    assert!(matches!(e, DataError::ResumeMismatch { .. }), "{e}");
    write_shard(dir.path(), Split::Train, 9, 2);
    let e = TrainData::open(spec(dir.path(), false, 2, 5), Some(pos)).err().unwrap();
    assert!(e.to_string().contains("16 chunks") && e.to_string().contains("18 chunks"), "{e}");
}

#[test]
fn static_loader_shuts_down_while_its_channel_is_full() {
    let dir = corpus();
    let mut data = TrainData::open(spec(dir.path(), false, 1, 5), None).unwrap();
    let b = take(&mut data, 1);
    assert_eq!(b[0].micro_batch, 1);
    std::thread::sleep(Duration::from_millis(50)); // let the thread fill the channel and block
    drop(data); // must not hang
}

#[test]
fn bad_specs_are_refused() {
    let dir = corpus();
    let e = TrainData::open(spec(dir.path(), false, 0, 5), None).err().unwrap();
    assert!(matches!(e, DataError::BadSpec { .. }), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = TrainData::open(spec(empty.path(), false, 1, 5), None).err().unwrap();
    assert!(
        matches!(e, DataError::NoTrainShards { .. }) && e.to_string().contains(&empty.path().display().to_string()),
        "{e}"
    );
}

/// The rows of `steps` optimizer steps of `per_step` rows with `micro_batch` rows per batch, and
/// the position after each step (what its checkpoint would store).
fn steps_of(data: &mut TrainData, per_step: usize, micro_batch: usize, steps: usize) -> Vec<StepRows> {
    (0..steps)
        .map(|_| {
            let batches = take(data, per_step / micro_batch);
            (all_rows(&batches), batches.last().map(|b| b.position_after.clone()))
        })
        .collect()
}

type StepRows = (Vec<(u64, usize)>, Option<DataPosition>);

#[test]
fn a_steps_rows_and_position_do_not_depend_on_the_micro_batch() {
    let dir = corpus();
    // Steps of 12 rows over 16-chunk epochs: steps straddle epoch boundaries.
    let split = |micro: usize| {
        let mut data = TrainData::open(spec(dir.path(), false, micro, 9), None).unwrap();
        steps_of(&mut data, 12, micro, 5)
    };
    let whole = split(12);
    assert_eq!(whole[1].0.len(), 12);
    for micro in [1, 2, 3, 4, 6] {
        assert_eq!(split(micro), whole, "micro-batch {micro} vs 12");
    }
}
