//! Follow mode through the training loop (shards published while it waits, stop when the
//! pipeline has finished and everything was read, shards released), and `--init-from`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use candle_core::Device;
use common::*;
use mamba_shards::format::Split;
use mamba_shards::{ShardParams, ShardReader};
use mamba_trainer::config::{MicroBatch, TrainConfig};
use mamba_trainer::data::{DataSpec, TrainData};
use mamba_trainer::train::{run, StopReason};

const SEQ: usize = 16;

fn write_manifest(dir: &std::path::Path, finished: bool, params: ShardParams) {
    let mut m = mamba_shards::Manifest::for_hand_written_shards(params, 8, "trainer follow test");
    if finished {
        m.finish("end of source");
    }
    m.write(dir).unwrap();
}

/// Follow mode end to end in-process: shards published while it trains; the fixed val set comes
/// after the first train shard here (a pipeline killed between the two renames and the manifest),
/// so the first eval waits for it, with loss.png already drawn by the first step; every eval uses
/// the same chunks. Then a finished directory with nothing left is an error, not a wait.
#[test]
fn follow_mode_trains_on_every_published_chunk_then_stops() {
    init_tracing();
    // All shards are made in a staging dir; the "pipeline" thread publishes them one by one.
    let staging = tempfile::tempdir().unwrap();
    synthetic_shards(staging.path(), 64, SEQ, 24, 4, 8);
    let data = tempfile::tempdir().unwrap();
    let params = *ShardReader::open(&staging.path().join("train-00000000.shard")).unwrap().header();
    let params = ShardParams::from_header(&params);
    write_manifest(data.path(), false, params);
    let out = tempfile::tempdir().unwrap();
    let (src, dst, plot) = (staging.path().to_path_buf(), data.path().to_path_buf(), out.path().join("loss.png"));
    let publisher = std::thread::spawn(move || {
        let publish = |split, seq| {
            let name = mamba_shards::shard_file_name(split, seq);
            std::fs::copy(src.join(&name), dst.join(format!(".{name}.tmp"))).unwrap();
            std::fs::rename(dst.join(format!(".{name}.tmp")), dst.join(&name)).unwrap();
        };
        publish(Split::Train, 0);
        // The trainer takes two steps (drawing loss.png at the first), then waits at its first eval.
        let t0 = std::time::Instant::now();
        let steps = || {
            std::fs::read_to_string(plot.with_file_name("metrics.jsonl"))
                .unwrap_or_default()
                .matches("\"kind\":\"step\"")
                .count()
        };
        while steps() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(120), "no second step");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(plot.exists(), "loss.png is drawn from the first step, before any eval");
        std::thread::sleep(Duration::from_millis(300));
        publish(Split::Val, 0);
        let mut m = mamba_shards::Manifest::read(&dst).unwrap().unwrap();
        m.val_set = Some(mamba_shards::manifest::ValSet { chunks: 4, shards: 1 });
        m.write(&dst).unwrap();
        for seq in 1..3u64 {
            std::thread::sleep(Duration::from_millis(300));
            publish(Split::Train, seq);
        }
        std::thread::sleep(Duration::from_millis(300));
        (m.finished, m.train.next_seq, m.train.chunks) = (true, 3, 24);
        m.write(&dst).unwrap();
    });
    let cfg = TrainConfig {
        follow: true,
        steps: 1000,
        micro_batch: MicroBatch::Fixed(2),
        grad_accum: Some(2),
        eval_every: 2,
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let outcome = run(&cfg, &no_stop()).unwrap();
    publisher.join().unwrap();
    assert_eq!(outcome.stop, StopReason::DataExhausted);
    assert_eq!(outcome.step, 24 / 4, "24 chunks, 4 per step, each once");
    let released = mamba_shards::ring::read_release(data.path()).unwrap().expect("release file written");
    assert!(released.train_released_below >= 2, "{released:?}");
    // Evals at steps 2 and 4 (every 2) and at the end (6), all on the same 4 chunks.
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert_eq!(evals.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4, 6], "{metrics}");
    assert!(evals.iter().all(|v| v["val_chunks"] == 4 && v["val_digest"] == evals[0]["val_digest"]), "{evals:?}");
    assert!(outcome.last_val_loss.is_some_and(f64::is_finite));

    // Nothing left: a new run (the release cursor is past every shard) and a resume are errors.
    let fresh = tempfile::tempdir().unwrap();
    let err = format!("{:#}", run(&TrainConfig { out: fresh.path().into(), ..cfg.clone() }, &no_stop()).unwrap_err());
    assert!(
        err.contains("the pipeline has finished") && err.contains("nothing to train") && err.contains("24 chunks"),
        "{err}"
    );
    let err = format!("{:#}", run(&TrainConfig { resume: true, ..cfg.clone() }, &no_stop()).unwrap_err());
    assert!(err.contains("nothing to train") && err.contains("by this run"), "{err}");
    // As a ring pipeline leaves it: the released shards deleted.
    for seq in 0..3 {
        std::fs::remove_file(data.path().join(mamba_shards::shard_file_name(Split::Train, seq))).unwrap();
    }
    let err = format!("{:#}", run(&TrainConfig { out: fresh.path().into(), ..cfg }, &no_stop()).unwrap_err());
    assert!(err.contains("released by an earlier trainer") && err.contains("nothing to train"), "{err}");
}

#[test]
fn init_from_a_checkpoint_starts_from_its_weights() {
    init_tracing();
    let data = tempfile::tempdir().unwrap();
    synthetic_shards(data.path(), 64, SEQ, 40, 4, 20);
    let first = tempfile::tempdir().unwrap();
    let a = run(&TrainConfig { steps: 3, ..tiny_config(data.path(), first.path(), "micro") }, &no_stop()).unwrap();
    let ckpt = first.path().join("ckpt-000003");
    // Fresh run from those weights, with another seed for init (ignored) and data order (same: seed 0).
    let second = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: 1,
        init_from: Some(ckpt.display().to_string()),
        model: "130m".into(),
        ..tiny_config(data.path(), second.path(), "micro")
    };
    let b = run(&cfg, &no_stop()).unwrap();
    // Its first loss is the checkpoint model's loss on the first batch of the data order.
    let (cfg_m, params) = mamba_trainer::checkpoint::params_from_loaded(
        mamba_trainer::checkpoint::load_model(&ckpt).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let model = mamba_trainer::model::MambaLM::new(&cfg_m, params.var_builder(&Device::Cpu)).unwrap();
    let spec = DataSpec {
        dir: data.path().into(),
        seq_len: SEQ,
        vocab_size: 64,
        seed: 0,
        follow: false,
        micro_batch: 2,
        prefetch: 1,
        on_bad_chunk: Default::default(),
    };
    let batch = TrainData::open(spec, None).unwrap().next_batch().unwrap().unwrap();
    let (x, y) = mamba_trainer::train::step::batch_tensors(&batch, &Device::Cpu).unwrap();
    let want = model.loss(&x, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!(
        (b.losses[0] - want).abs() <= 1e-6 * want,
        "init-from first loss {} vs checkpoint model {want}",
        b.losses[0]
    );
    assert!((a.losses[0] - want).abs() > 1e-4, "the checkpoint differs from a fresh init");
    let saved = mamba_trainer::checkpoint::load_model(&second.path().join("ckpt-000001")).unwrap();
    assert_eq!(saved.config.d_model, 8, "the checkpoint's config replaces --model");

    // Data with a larger vocabulary than the checkpoint's embedding: a clear error.
    let big = tempfile::tempdir().unwrap();
    synthetic_shards(big.path(), 1000, SEQ, 8, 2, 20);
    let cfg = TrainConfig {
        steps: 1,
        init_from: Some(ckpt.display().to_string()),
        ..tiny_config(big.path(), tempfile::tempdir().unwrap().path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("1000") && err.contains("64"), "{err}");
    // A path that does not exist and is no repo id.
    let cfg = TrainConfig {
        steps: 1,
        init_from: Some("/no/such/dir".into()),
        ..tiny_config(data.path(), tempfile::tempdir().unwrap().path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("/no/such/dir"), "{err}");
}
