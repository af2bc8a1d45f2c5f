//! The live ring end to end (issue 5, docs/ring.md): the real `pipeline` (streaming
//! tinyshakespeare.parquet over HTTP from a loopback Hub server) and the real `trainer --follow`
//! (tiny model, CPU) run as processes on one data dir with a ring of 3 slots, and are killed and
//! restarted alone at seeded random moments with SIGINT, SIGTERM and SIGKILL. At the end:
//! - every published train chunk was trained on exactly once in the final model's history (the
//!   `chunks` of the step records kept in the trainer's metrics.jsonl, which a resume truncates
//!   to its checkpoint's step, against the pipeline's manifest);
//! - the data dir never held more than 3 train shards + 1 shard in progress (sampled every few ms);
//! - no shard was ever reported corrupt or partial by the trainer (it verifies every frame),
//!   except one the test spoils on purpose while both are stopped: that one is reported, skipped
//!   and released, and the pipeline goes on;
//! - start order did not matter (the trainer starts before the data dir exists; later the
//!   pipeline restarts alone, fills the ring and waits), both programs' log lines show the ring;
//! - SIGINT/SIGTERM stop the trainer promptly with exit status 128 + signal, even while it waits
//!   for the pipeline;
//! - the trainer's loss fell;
//! - it evaluated during the live run (the fixed val set is published before the first train
//!   shard), before and after kills and resumes, always on the same chunks (the digest of the
//!   eval chunks in its log lines and metrics.jsonl), and a static run of the same source (the
//!   pipeline offline into another dir, the trainer without --follow) evaluates on them too.
//!
//! The trainer binary belongs to another package, so `CARGO_BIN_EXE_trainer` is not available
//! here: the test builds it with `$CARGO build -p mamba-trainer` (same profile, same target dir as
//! this test binary: the directory of `CARGO_BIN_EXE_pipeline`) and runs it from there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod ring_harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hub_server::HubServer;
use common::{p, tinyshakespeare};
use mamba_shards::testing::SplitMix64;
use ring_harness::{eval_sets, has_checkpoint, interrupted, trainer_binary, DiskSampler, Proc};

const SLOTS: usize = 3;
const CHUNKS_PER_SHARD: u64 = 8;
const MAX_TOKENS: &str = "24000";
const SEED: u64 = 5;
/// The fixed val set: 16 chunks of 64 tokens (2 val shards of 8).
const VAL_TOKENS: &str = "1024";

#[test]
fn pipeline_and_trainer_survive_kills_and_every_chunk_is_trained_once() {
    let t_test = Instant::now();
    let trainer_bin = trainer_binary();
    let trainer_path = trainer_bin.clone();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data"); // does not exist yet: the trainer starts first and waits
    let run = tmp.path().join("run");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    let server = HubServer::start(BTreeMap::from([(
        "sample/10BT/000_00000.parquet".to_string(),
        std::fs::read(tinyshakespeare()).unwrap(),
    )]));
    let endpoint = server.endpoint();

    let (d, e) = (data.clone(), endpoint.clone());
    let mut pipeline = Proc {
        name: "pipeline",
        cmd: Box::new(move |_| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
            c.env("RUST_LOG", "info")
                .env_remove("HF_TOKEN")
                .env("HF_HOME", std::env::temp_dir().join("pipeline-test-hf-home"));
            c.args([
                "--endpoint",
                &e,
                "--data-dir",
                p(&d),
                "--seq-len",
                "64",
                "--chunks-per-shard",
                "8",
                "--ring-slots",
                "3",
                "--val-tokens",
                VAL_TOKENS,
            ]);
            c.args(["--max-tokens", MAX_TOKENS, "--threads", "1", "--log-every", "1", "--retry-backoff-ms", "5"]);
            c
        }),
        child: None,
        logs: Vec::new(),
        log_dir: logs.clone(),
    };
    let (d, r) = (data.clone(), run.clone());
    let mut trainer = Proc {
        name: "trainer",
        cmd: Box::new(move |_| {
            let mut c = Command::new(&trainer_bin);
            c.env("RUST_LOG", "info").arg("train").args([
                "--data",
                p(&d),
                "--out",
                p(&r),
                "--model",
                "tiny",
                "--follow",
            ]);
            c.args([
                "--steps",
                "100000",
                "--micro-batch",
                "3",
                "--grad-accum",
                "2",
                "--warmup",
                "5",
                "--muon-lr",
                "0.02",
            ]);
            c.args([
                "--adamw-lr",
                "0.01",
                "--weight-decay",
                "0",
                "--eval-every",
                "2",
                "--eval-chunks",
                "8",
                "--save-every",
                "6",
            ]);
            c.args(["--seed", "1", "--device", "cpu"]);
            if has_checkpoint(&r) {
                c.arg("--resume");
            } else if r.exists() {
                // SIGKILLed before its first checkpoint (a busy machine): nothing to resume, and
                // nothing was released to the pipeline, so the run starts afresh.
                c.arg("--overwrite");
            }
            c
        }),
        child: None,
        logs: Vec::new(),
        log_dir: logs.clone(),
    };

    // ---- 1. trainer first: it waits for the data dir, then for the first shard --------------
    trainer.start();
    trainer.wait_for_log("waiting for the pipeline to create the data directory", Duration::from_secs(60));
    let sampler = DiskSampler::start(data.clone());
    pipeline.start();
    trainer.wait_for_log("step ", Duration::from_secs(60));

    // ---- 2. seeded kills and restarts of either program --------------------------------------
    let mut rng = SplitMix64(SEED); // the seeded randomness of the kill schedule
    let mut schedule: Vec<(usize, &str)> =
        [(0, "INT"), (0, "TERM"), (0, "KILL"), (1, "INT"), (1, "TERM"), (1, "KILL")].to_vec();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut stop_times = Vec::new();
    for &(who, signal) in &schedule {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
        let proc = if who == 0 { &mut pipeline } else { &mut trainer };
        if !proc.running() {
            proc.child = None;
            proc.start(); // it had finished (or the pipeline had published everything): run it again
            continue;
        }
        let (status, took) = proc.kill(signal);
        println!(
            "{} killed with SIG{signal} at {:.1} s: {status} after {took:?}",
            proc.name,
            t_test.elapsed().as_secs_f64()
        );
        match (proc.name, signal) {
            (_, "KILL") => assert!(!status.success()),
            // 128 + the signal (0 if it had just finished on its own).
            ("trainer", _) => {
                assert!(
                    matches!(status.code(), Some(0)) || status.code() == Some(interrupted(signal)),
                    "trainer after SIG{signal}: {status}\n{}",
                    proc.log()
                );
                stop_times.push(took);
            }
            (_, _) => assert!(
                matches!(status.code(), Some(0)) || status.code() == Some(interrupted(signal)),
                "pipeline after SIG{signal}: {status}\n{}",
                proc.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        proc.start();
    }

    // ---- 3. a trainer waiting for a dead pipeline stops at once on SIGINT ---------------------
    assert!(pipeline.running(), "the pipeline finished too early for this part; raise MAX_TOKENS");
    let (status, _) = pipeline.kill("KILL");
    assert!(!status.success());
    let seen = trainer.log().len();
    trainer.wait_for_log_from(seen, "ring: trainer waiting for the pipeline", Duration::from_secs(60));
    let (status, took) = trainer.kill("INT");
    assert_eq!(status.code(), Some(130), "{status}\n{}", trainer.log());
    assert!(took < Duration::from_secs(5), "a waiting trainer took {took:?} to stop");
    // Steps of 2 × 3 chunks do not line up with shards of 8 chunks, so the signal may land with
    // half a step gathered: those chunks must not count as trained (the exactly-once check).
    let half_step = trainer.log().contains("signal while waiting for data");
    println!("waiting trainer stopped {took:?} after SIGINT (half a step gathered: {half_step})");

    // ---- 4. pipeline alone: it fills the ring and waits; then the trainer comes back ----------
    pipeline.start();
    pipeline.wait_for_log("3/3 full, waiting for trainer", Duration::from_secs(60));
    // While nobody reads it, spoil the middle one of the 3 unread shards: the trainer must report
    // and skip it, and release it like any other so that the pipeline goes on.
    let corrupt_seq = mamba_shards::Manifest::read(&data).unwrap().unwrap().train.next_seq - 2;
    let corrupt_path = data.join(mamba_shards::shard_file_name(mamba_shards::Split::Train, corrupt_seq));
    let mut bytes = std::fs::read(&corrupt_path).unwrap();
    let index_offset = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize; // frames: 4096..index_offset
    bytes[(4096 + index_offset) / 2] ^= 0x5a;
    std::fs::write(&corrupt_path, bytes).unwrap();
    trainer.start();

    // ---- 5. both run to the end ---------------------------------------------------------------
    let status = pipeline.wait(Duration::from_secs(120));
    assert!(status.success(), "pipeline: {status}\n{}", pipeline.all_logs());
    let status = trainer.wait(Duration::from_secs(120));
    assert!(status.success(), "trainer: {status}\n{}", trainer.all_logs());
    let (max_train, max_tmp, samples) = sampler.finish();

    // ---- 6. checks ------------------------------------------------------------------------------
    let manifest = mamba_shards::Manifest::read(&data).unwrap().unwrap();
    assert!(manifest.finished && manifest.ring_slots == Some(SLOTS as u32), "{manifest:?}");
    let (shards, chunks) = (manifest.train.next_seq, manifest.train.chunks);
    assert!(shards >= 20, "only {shards} train shards published");
    let mut expected = Vec::new();
    for s in (0..shards).filter(|&s| s != corrupt_seq) {
        let n = if s + 1 < shards { CHUNKS_PER_SHARD } else { chunks - CHUNKS_PER_SHARD * (shards - 1) };
        expected.extend((0..n).map(|c| (s, c)));
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut trained = Vec::new();
    let mut losses = Vec::new();
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "step" {
            losses.push(v["loss"].as_f64().unwrap());
            for c in v["chunks"].as_array().unwrap() {
                trained.push((c[0].as_u64().unwrap(), c[1].as_u64().unwrap()));
            }
        }
    }
    trained.sort();
    let dupes: Vec<_> = trained.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    assert!(dupes.is_empty(), "chunks trained twice: {dupes:?}");
    assert_eq!(trained.len(), expected.len(), "trained {} chunks, {} published", trained.len(), expected.len());
    assert_eq!(trained, expected, "the trained chunks are not the published ones");

    let all_trainer = trainer.all_logs();
    let all_pipeline = pipeline.all_logs();
    let skips: Vec<&str> = all_trainer.lines().filter(|l| l.contains("skipping train shard")).collect();
    assert_eq!(
        skips.len(),
        1,
        "exactly the spoilt shard {corrupt_seq} must be skipped (no partial shard read):\n{}",
        skips.join("\n")
    );
    assert!(skips[0].contains(&format!("skipping train shard {corrupt_seq},")), "{}", skips[0]);
    assert!(all_trainer.contains("| ring ") && all_trainer.contains("released <"), "no ring state in the step lines");
    assert!(
        all_pipeline.contains("| ring ") && all_pipeline.contains(&format!("/{SLOTS}")),
        "no ring state in the pipeline's lines"
    );
    assert!(
        max_train <= SLOTS && max_tmp <= 1,
        "disk: {max_train} train shards / {max_tmp} temporaries at once (ring {SLOTS})"
    );
    let n = losses.len().min(5);
    let (first, last) =
        (losses[..n].iter().sum::<f64>() / n as f64, losses[losses.len() - n..].iter().sum::<f64>() / n as f64);
    assert!(last < first - 1.0, "loss did not fall: first {first:.3}, last {last:.3}");

    // ---- 7. evaluations: during the live run, across resumes, on the same chunks as a static run
    let live_sets = eval_sets(&trainer.logs);
    let with_evals = live_sets.iter().filter(|s| !s.is_empty()).count();
    assert!(
        with_evals >= 2,
        "evaluations in only {with_evals} trainer processes (want: before and after a resume):\n{all_trainer}"
    );
    assert!(live_sets.last().is_some_and(|s| !s.is_empty()), "the last trainer (a resumed one) did not evaluate");
    let digests: std::collections::BTreeSet<&String> = live_sets.iter().flatten().collect();
    assert_eq!(digests.len(), 1, "the live run evaluated on different chunks: {digests:?}");
    let live_digest = digests.into_iter().next().unwrap().clone();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    let last_step = metrics.lines().filter(|l| l.contains("\"kind\":\"step\"")).count() as u64;
    assert!(evals.iter().any(|v| v["step"].as_u64().unwrap() < last_step), "no eval before the end: {evals:?}");
    assert!(evals.iter().all(|v| v["val_chunks"] == 8 && v["val_digest"] == live_digest.as_str()), "{evals:?}");
    let static_data = tmp.path().join("static-data");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .env_remove("HF_TOKEN")
        .env("HF_HOME", std::env::temp_dir().join("pipeline-test-hf-home"))
        .args([
            "--endpoint",
            &endpoint,
            "--data-dir",
            p(&static_data),
            "--seq-len",
            "64",
            "--chunks-per-shard",
            "8",
            "--ring-slots",
            "0",
        ])
        .args(["--val-tokens", VAL_TOKENS, "--max-tokens", MAX_TOKENS, "--threads", "1", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "static pipeline: {}", String::from_utf8_lossy(&out.stderr));
    let static_run = tmp.path().join("static-run");
    let out = Command::new(&trainer_path)
        .env("RUST_LOG", "info")
        .arg("train")
        .args([
            "--data",
            p(&static_data),
            "--out",
            p(&static_run),
            "--model",
            "tiny",
            "--steps",
            "1",
            "--micro-batch",
            "2",
        ])
        .args(["--grad-accum", "1", "--eval-chunks", "8", "--seed", "1", "--device", "cpu"])
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "static trainer: {log}");
    assert!(
        log.contains(&format!("(set {live_digest})")),
        "the static run evaluated on other chunks than the live run ({live_digest}):\n{log}"
    );
    println!(
        "ring e2e: {shards} shards / {chunks} chunks (shard {corrupt_seq} spoilt and skipped), the rest trained once in {} steps, loss {first:.2} -> {last:.2}, \
         disk max {max_train} train + {max_tmp} tmp over {samples} samples, trainer stops {stop_times:?}, {:.1} s",
        losses.len(),
        t_test.elapsed().as_secs_f64()
    );
}
