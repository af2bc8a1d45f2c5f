//! A binary of the workspace (`pipeline`, `trainer`) as a child process, for signal and lock
//! tests: its output (stdout and stderr) is collected line by line on threads; a test can wait
//! for a line, send a signal with `kill`, and wait for the exit with a bound. Failures panic with
//! the output so far.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest wait for an expected line of output.
const LINE_WITHIN: Duration = Duration::from_secs(120);
/// The longest wait for the exit after a stop signal.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

pub struct Running {
    pub child: Child,
    /// The program's file name, for messages.
    name: String,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

fn collect(from: impl Read + Send + 'static, tx: Sender<String>, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            log.lock().unwrap_or_else(|p| p.into_inner()).push_str(&format!("{line}\n"));
            let _ = tx.send(line);
        }
    });
}

impl Running {
    /// Spawns `cmd` with its stdout and stderr piped and collected.
    pub fn start(mut cmd: Command) -> Running {
        let program = std::path::Path::new(cmd.get_program()).to_path_buf();
        let name =
            program.file_name().map_or_else(|| program.display().to_string(), |n| n.to_string_lossy().into_owned());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout is piped"), tx.clone(), log.clone());
        collect(child.stderr.take().expect("stderr is piped"), tx, log.clone());
        Running { child, name, lines, log }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Blocks until an output line contains `needle` (panics after 120 s or at the end of output).
    pub fn wait_for_line(&self, needle: &str) {
        let deadline = Instant::now() + LINE_WITHIN;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} from the {}:\n{}", self.name, self.log());
    }

    /// `kill -SIG pid`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(ok.success(), "kill -{sig}");
    }

    /// Sends `first` and `second` right after each other (one shell, microseconds apart) and
    /// waits for the exit: (status, time from the signals to the exit, output).
    pub fn stop_twice(mut self, first: &str, second: &str) -> (ExitStatus, Duration, String) {
        let t = Instant::now();
        let pid = self.child.id();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{first} {pid}; kill -{second} {pid}"))
            .status()
            .expect("running sh");
        assert!(ok.success(), "kill -{first}; kill -{second}");
        let status = self.wait_at_most(EXIT_WITHIN);
        (status, t.elapsed(), self.log())
    }

    /// Sends `sig` and waits for the exit: (status, time from the signal to the exit, output).
    pub fn stop(mut self, sig: &str) -> (ExitStatus, Duration, String) {
        let t = Instant::now();
        self.signal(sig);
        let status = self.wait_at_most(EXIT_WITHIN);
        (status, t.elapsed(), self.log())
    }

    /// The exit status; kills the process and panics when it runs longer than `limit`.
    pub fn wait_at_most(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(50)); // the rest of the output
                return status;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the {} did not exit within {limit:?}:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
