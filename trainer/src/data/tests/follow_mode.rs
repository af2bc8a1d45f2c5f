//! Follow mode: shards published later, each chunk once, release after checkpoints, corrupt shards
//! skipped, end on the pipeline's "finished", exact resume.

use std::collections::BTreeSet;
use std::time::Instant;

use mamba_shards::format::Split;
use mamba_shards::ring::{read_release, write_release, Release};

use super::*;
use crate::data::{Cursor, DataError, DataPosition};

fn released(dir: &Path) -> Option<u64> {
    read_release(dir).unwrap().map(|r| r.train_released_below)
}

fn chunks_of(shards: &[(u64, usize)]) -> Vec<(u64, usize)> {
    shards.iter().flat_map(|&(s, n)| (0..n).map(move |k| (s, k))).collect()
}

#[test]
fn follow_picks_up_later_shards_reads_each_chunk_once_and_ends_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), Split::Train, 0, 5);
    let publisher = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            write_shard(&dir, Split::Train, 1, 4);
            std::thread::sleep(Duration::from_millis(300));
            write_shard(&dir, Split::Train, 2, 3);
            write_manifest_finished(&dir);
        })
    };
    // 12 chunks with micro_batch 5: the last batch has 2 rows.
    let mut data = TrainData::open(spec(dir.path(), true, 5, 3), None).unwrap();
    let batches = take_all(&mut data);
    publisher.join().unwrap();
    let ids = all_rows(&batches);
    assert_eq!(ids.len(), 12, "{ids:?}");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        chunks_of(&[(0, 5), (1, 4), (2, 3)]).into_iter().collect()
    );
    // Shard after shard, each shuffled within itself.
    let seqs: Vec<u64> = ids.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    assert_ne!(ids[..5], chunks_of(&[(0, 5)])[..], "shard 0 was not shuffled");
    assert_eq!(batches.iter().map(|b| b.micro_batch).collect::<Vec<_>>(), vec![5, 5, 2]);
    assert!(
        batches[1].wait >= Duration::from_millis(100),
        "the batch that needed shard 1 waited {:?}",
        batches[1].wait
    );
    assert_eq!(data.position().cursor, Cursor::Follow { shard: 3, chunk: 0 });
    assert!(data.next_batch().unwrap().is_none(), "None again after the end");
    assert!(data.ring_status().contains("all read"), "{}", data.ring_status());
    assert!(!data.wants_checkpoint(), "nothing more to free once the pipeline finished");
    // Nothing was released without a checkpoint; the final checkpoint releases everything.
    assert_eq!(released(dir.path()), None);
    data.checkpoint_saved(&data.position().clone()).unwrap();
    assert_eq!(released(dir.path()), Some(3));
}

#[test]
fn follow_steps_take_the_same_chunks_whatever_the_micro_batch() {
    let dir = tempfile::tempdir().unwrap();
    write_train_shards(dir.path(), &[5, 4, 3]);
    write_manifest_finished(dir.path());
    // Steps of 4 rows: 12 chunks are 3 full steps; each step's rows and end position agree.
    let steps = |micro: usize| {
        let mut data = TrainData::open(spec(dir.path(), true, micro, 3), None).unwrap();
        let steps: Vec<_> = (0..3)
            .map(|_| {
                let batches = take(&mut data, 4 / micro);
                (all_rows(&batches), batches.last().map(|b| b.position_after.clone()))
            })
            .collect();
        assert!(data.next_batch().unwrap().is_none());
        steps
    };
    let whole = steps(4);
    assert_eq!(whole.iter().map(|s| s.0.len()).sum::<usize>(), 12);
    assert_eq!(steps(1), whole);
    assert_eq!(steps(2), whole);
}

#[test]
fn follow_releases_shards_only_after_a_checkpoint_that_no_longer_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    write_train_shards(dir.path(), &[3, 3, 3]);
    let mut data = TrainData::open(spec(dir.path(), true, 1, 3), None).unwrap();
    let b = take(&mut data, 4); // all of shard 0, one chunk of shard 1
    assert_eq!(b[2].position_after.cursor, Cursor::Follow { shard: 1, chunk: 0 });
    assert_eq!(b[3].position_after.cursor, Cursor::Follow { shard: 1, chunk: 1 });
    assert_eq!(released(dir.path()), None, "reading alone releases nothing");
    assert!(!data.wants_checkpoint(), "shard 2 is published: no need to checkpoint yet");
    data.checkpoint_saved(&b[1].position_after).unwrap(); // a checkpoint inside shard 0
    assert_eq!(released(dir.path()), None);
    data.checkpoint_saved(&b[3].position_after).unwrap(); // inside shard 1: shard 0 is free
    assert_eq!(released(dir.path()), Some(1));
    assert!(
        data.ring_status().starts_with("ring 2/? | shard 1 chunk 1/3, 1 ready ahead, released <1"),
        "{}",
        data.ring_status()
    );

    // The rest of shard 1 and all of shard 2; then the loader starves with shards 1 and 2 unreleased.
    let b = take(&mut data, 5);
    assert_eq!(b[4].position_after.cursor, Cursor::Follow { shard: 3, chunk: 0 });
    assert!(data.wants_checkpoint());
    let started = Instant::now();
    while !data.ring_status().contains("waiting for pipeline") {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", data.ring_status());
        std::thread::sleep(Duration::from_millis(20));
    }
    data.checkpoint_saved(&b[4].position_after).unwrap();
    assert_eq!(released(dir.path()), Some(3));
    assert!(!data.wants_checkpoint(), "nothing left to release");

    // The pipeline publishes more and finishes.
    write_shard(dir.path(), Split::Train, 3, 2);
    write_manifest_finished(dir.path());
    assert_eq!(
        all_rows(&take_all(&mut data)).into_iter().collect::<BTreeSet<_>>(),
        chunks_of(&[(3, 2)]).into_iter().collect()
    );
}

#[test]
fn follow_skips_and_reports_corrupt_shards_without_training_on_them() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), Split::Train, 0, 4);
    let corrupt = write_shard(dir.path(), Split::Train, 1, 6);
    corrupt_frame(&corrupt, 4); // chunks 0..3 of it are fine, but no chunk of it may be used
    write_shard(dir.path(), Split::Train, 2, 3);
    let truncated = write_shard(dir.path(), Split::Train, 3, 3);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len - 3).unwrap();
    write_manifest_finished(dir.path());

    let mut data = TrainData::open(spec(dir.path(), true, 2, 9), None).unwrap();
    let ids = all_rows(&take_all(&mut data));
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), chunks_of(&[(0, 4), (2, 3)]).into_iter().collect());
    assert_eq!(ids.len(), 7);
    let skipped = data.skipped_shards();
    assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 3]);
    assert!(
        skipped[0].1.contains(&corrupt.display().to_string()) && skipped[0].1.contains("chunk 4"),
        "{}",
        skipped[0].1
    );
    assert!(
        skipped[1].1.contains(&truncated.display().to_string()) && skipped[1].1.contains("truncated"),
        "{}",
        skipped[1].1
    );
    assert!(data.ring_status().contains("2 corrupt skipped"), "{}", data.ring_status());
    // Skipped shards count as consumed: the final checkpoint releases them too.
    data.checkpoint_saved(&data.position().clone()).unwrap();
    assert_eq!(released(dir.path()), Some(4));
}

#[test]
fn follow_resume_gives_the_identical_continuation() {
    let dir = tempfile::tempdir().unwrap();
    write_train_shards(dir.path(), &[5, 3, 6]);
    write_manifest_finished(dir.path());
    let s = spec(dir.path(), true, 2, 21);
    let mut straight = TrainData::open(s.clone(), None).unwrap();
    let reference: Vec<Vec<u32>> = take_all(&mut straight).into_iter().map(|b| b.tokens).collect();
    assert_eq!(reference.len(), 7);
    drop(straight);
    for cut in [1, 2, 4, 6, 7] {
        let mut first = TrainData::open(s.clone(), None).unwrap();
        let before = take(&mut first, cut);
        let pos = before[cut - 1].position_after.clone();
        drop(first);
        let mut resumed = TrainData::open(s.clone(), Some(pos)).unwrap();
        let after = take_all(&mut resumed);
        let joined: Vec<Vec<u32>> = before.into_iter().chain(after).map(|b| b.tokens).collect();
        assert_eq!(joined, reference, "resume after batch {cut}");
    }
}

#[test]
fn follow_starts_at_the_release_cursor_and_refuses_a_resume_into_recycled_shards() {
    let dir = tempfile::tempdir().unwrap();
    // An earlier trainer released shards below 5 and the pipeline deleted them.
    write_release(dir.path(), Release { train_released_below: 5 }).unwrap();
    write_shard(dir.path(), Split::Train, 5, 2);
    write_shard(dir.path(), Split::Train, 6, 2);
    write_manifest_finished(dir.path());
    let mut data = TrainData::open(spec(dir.path(), true, 1, 0), None).unwrap();
    assert_eq!(data.position().cursor, Cursor::Follow { shard: 5, chunk: 0 });
    assert_eq!(all_rows(&take_all(&mut data)).len(), 4);

    let inside_gone = DataPosition { seed: 0, cursor: Cursor::Follow { shard: 3, chunk: 1 } };
    let e = TrainData::open(spec(dir.path(), true, 1, 0), Some(inside_gone)).err().unwrap();
    assert!(matches!(e, DataError::MissingShard { seq: 3, .. }), "{e}");
    let before_gone = DataPosition { seed: 0, cursor: Cursor::Follow { shard: 3, chunk: 0 } };
    let mut data = TrainData::open(spec(dir.path(), true, 1, 0), Some(before_gone)).unwrap();
    let e = data.next_batch().err().unwrap();
    assert!(
        matches!(e, DataError::MissingShard { seq: 3, .. }) && e.to_string().contains("oldest train shard left is 5"),
        "{e}"
    );
}

#[test]
fn follow_stops_on_a_shard_that_does_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), Split::Train, 0, 2);
    let wrong = write_shard_with(dir.path(), Split::Train, 1, 2, mamba_shards::ShardParams::new(9, VOCAB, VOCAB - 1));
    let mut data = TrainData::open(spec(dir.path(), true, 1, 0), None).unwrap();
    take(&mut data, 2);
    let e = data.next_batch().err().unwrap();
    assert!(matches!(e, DataError::WrongChunkTokens { found: 10, expected: 8, .. }), "{e}");
    assert!(e.to_string().contains(&wrong.display().to_string()), "{e}");
    assert!(matches!(data.next_batch(), Err(DataError::LoaderStopped { .. })));

    // A pipeline whose manifest announces other chunks is refused at open, before any waiting.
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), false, mamba_shards::ShardParams::new(9, VOCAB, VOCAB - 1));
    let e = TrainData::open(spec(dir.path(), true, 1, 0), None).err().unwrap();
    assert!(
        matches!(e, DataError::WrongChunkTokens { found: 10, .. }) && e.to_string().contains("manifest.json"),
        "{e}"
    );
}

#[test]
fn follow_loader_shuts_down_while_waiting_for_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let data = TrainData::open(spec(dir.path(), true, 1, 0), None).unwrap();
    let started = Instant::now();
    while !data.ring_status().contains("waiting for pipeline") {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", data.ring_status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!data.wants_checkpoint(), "nothing read, nothing to release");
    drop(data); // the thread sees the stop flag within one poll
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Adds the pipeline's ring size to its manifest as a top-level `ring_slots`.
fn set_ring_slots(dir: &Path, slots: u64) {
    let path = dir.join(mamba_shards::ring::MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["ring_slots"] = slots.into();
    std::fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn follow_wants_a_checkpoint_before_a_step_could_block_on_a_full_ring() {
    let dir = tempfile::tempdir().unwrap();
    write_train_shards(dir.path(), &[3, 3]);
    let mut data = TrainData::open(spec(dir.path(), true, 1, 3), None).unwrap();
    data.set_batches_per_step(4);
    take(&mut data, 2);
    assert!(!data.wants_checkpoint(), "nothing fully read yet");
    take(&mut data, 2); // position (1, 1): shard 0 done, 2 chunks left, a step needs 4
    assert_eq!(data.position().cursor, Cursor::Follow { shard: 1, chunk: 1 });
    assert!(data.wants_checkpoint(), "less than a step is left and the ring size is unknown");

    // The manifest gives the ring size: 8 slots with 2 used leave the pipeline free to publish.
    write_manifest(dir.path(), false, params());
    set_ring_slots(dir.path(), 8);
    assert!(!data.wants_checkpoint());
    set_ring_slots(dir.path(), 0);
    assert!(!data.wants_checkpoint(), "no ring: the pipeline never waits for releases");
    set_ring_slots(dir.path(), 3); // 2 used + the next one fill it
    assert!(data.wants_checkpoint());
    data.checkpoint_saved(&data.position().clone()).unwrap();
    assert_eq!(released(dir.path()), Some(1));
    assert!(!data.wants_checkpoint(), "shard 0 is released; shard 1 is still being read");
    data.set_batches_per_step(1);
    write_shard(dir.path(), Split::Train, 2, 3);
    set_ring_slots(dir.path(), 2);
    take(&mut data, 2); // position (2, 0): shard 1 done
    assert!(!data.wants_checkpoint(), "3 chunks ahead, a step needs 1");
    take(&mut data, 2);
    assert!(!data.wants_checkpoint(), "1 chunk ahead, a step needs 1");
    take(&mut data, 1);
    assert!(data.wants_checkpoint(), "nothing ahead, and shards 1 and 2 on disk fill the ring of 2");
}
