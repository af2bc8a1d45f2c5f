//! The harness of the live-ring end-to-end test (`ring_e2e.rs`): the seeded kill schedule, the
//! trainer binary, a program under test with its logs and signals, the data-dir sampler, and what
//! the test reads back from logs and run directories.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The exit status of a process stopped by SIGINT or SIGTERM: 128 + the signal's number.
pub fn interrupted(signal: &str) -> i32 {
    128 + if signal == "INT" { 2 } else { 15 }
}

/// Builds the trainer (a no-op when it is fresh) into this test's target dir and profile.
pub fn trainer_binary() -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_pipeline")).parent().unwrap().to_path_buf();
    let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).args([
        "build",
        "-p",
        "mamba-trainer",
        "--bin",
        "trainer",
    ]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("running cargo build -p mamba-trainer");
    assert!(status.success(), "cargo build -p mamba-trainer failed");
    let bin = bin_dir.join(format!("trainer{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not found after cargo build", bin.display());
    bin
}

/// One program under test: how to start it, its current process, and its log files.
pub struct Proc {
    pub name: &'static str,
    pub cmd: Box<dyn Fn(&Path) -> Command>,
    pub child: Option<Child>,
    pub logs: Vec<PathBuf>,
    pub log_dir: PathBuf,
}

impl Proc {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = self.log_dir.join(format!("{}-{}.log", self.name, self.logs.len()));
        let out = File::create(&log).unwrap();
        let mut cmd = (self.cmd)(&self.log_dir);
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", self.name)));
        self.logs.push(log);
    }

    pub fn log(&self) -> String {
        self.logs.last().map(|l| std::fs::read_to_string(l).unwrap_or_default()).unwrap_or_default()
    }

    pub fn all_logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| format!("==== {}\n{}", l.display(), std::fs::read_to_string(l).unwrap_or_default()))
            .collect()
    }

    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends `signal` (INT, TERM or KILL) and waits for the exit; returns its status and how long it took.
    pub fn kill(&mut self, signal: &str) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().unwrap();
        let t0 = Instant::now();
        let ok = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(ok.success() || child.try_wait().unwrap().is_some(), "kill -{signal} {}", self.name);
        let status = self.wait(Duration::from_secs(60));
        (status, t0.elapsed())
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                panic!("{} did not exit within {limit:?}; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the current log contains `text` after its first `from` bytes.
    pub fn wait_for_log_from(&mut self, from: usize, text: &str, limit: Duration) {
        let t0 = Instant::now();
        while !self.log().get(from..).unwrap_or_default().contains(text) {
            assert!(t0.elapsed() < limit, "{} never logged {text:?}; log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for_log(&mut self, text: &str, limit: Duration) {
        self.wait_for_log_from(0, text, limit);
    }
}

/// Samples the data dir every few ms: the most train shards and temporaries seen at once.
pub struct DiskSampler {
    stop: Arc<AtomicBool>,
    max_train: Arc<AtomicUsize>,
    max_tmp: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DiskSampler {
    pub fn start(dir: PathBuf) -> Self {
        let (stop, max_train, max_tmp, samples) = Default::default();
        let s = DiskSampler { stop, max_train, max_tmp, samples, thread: None };
        let (stop, max_train, max_tmp, samples) =
            (s.stop.clone(), s.max_train.clone(), s.max_tmp.clone(), s.samples.clone());
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    let names: Vec<String> =
                        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    let train = names.iter().filter(|n| n.starts_with("train-") && n.ends_with(".shard")).count();
                    let tmp = names
                        .iter()
                        .filter(|n| (n.starts_with(".train-") || n.starts_with(".val-")) && n.ends_with(".tmp"))
                        .count();
                    max_train.fetch_max(train, Ordering::SeqCst);
                    max_tmp.fetch_max(tmp, Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        DiskSampler { thread: Some(thread), ..s }
    }

    pub fn finish(mut self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.max_train.load(Ordering::SeqCst),
            self.max_tmp.load(Ordering::SeqCst),
            self.samples.load(Ordering::SeqCst),
        )
    }
}

/// The val set digests of the `eval step … (set DIGEST)` lines, per trainer log.
pub fn eval_sets(logs: &[PathBuf]) -> Vec<Vec<String>> {
    logs.iter()
        .map(|l| {
            let text = std::fs::read_to_string(l).unwrap_or_default();
            text.lines()
                .filter(|line| line.contains("eval step"))
                .filter_map(|line| {
                    line.split("(set ").nth(1).and_then(|rest| rest.split(')').next()).map(str::to_string)
                })
                .collect()
        })
        .collect()
}

pub fn has_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run).is_ok_and(|d| {
        d.filter_map(|e| e.ok()).any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("ckpt-") && !n.ends_with(".tmp")
        })
    })
}
