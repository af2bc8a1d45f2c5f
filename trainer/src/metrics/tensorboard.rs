//! TensorBoard event files written directly (no TensorFlow): `run_dir/tb/events.out.tfevents.
//! {unix_secs}.{hostname}`, TFRecord-framed ([`super::tfrecord`]) `Event` protos
//! ([`super::event_proto`]). `tensorboard --logdir run_dir/tb` and
//! `wandb sync --sync-tensorboard run_dir/tb` read them.
//!
//! Every process writes a new file. Its first event is the file version, the second a SessionLog
//! START at the first step this process will log: TensorBoard then drops events of older files
//! with that step or later, i.e. what a killed run logged after its last checkpoint.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::event_proto::{encode, Event, What};
use super::tfrecord::write_record;
use super::MetricsError;

pub(crate) struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The host name for the file name (TensorBoard's convention), restricted to safe characters.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

impl EventWriter {
    /// Creates a new event file in `tb_dir` (made if missing). `first_step` is the first step
    /// this run will log (0, or the resume step + 1).
    pub(crate) fn create(tb_dir: &Path, first_step: u64) -> Result<Self, MetricsError> {
        std::fs::create_dir_all(tb_dir).map_err(|e| MetricsError::io(tb_dir, e))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let base = format!("events.out.tfevents.{secs}.{}", hostname());
        // Two writers in the same second (a quick restart, tests) get distinct names.
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = tb_dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(MetricsError::io(&path, e)),
            }
        };
        let mut w = EventWriter { path, file: BufWriter::new(file) };
        w.write(&Event { wall_time: now(), step: 0, what: What::FileVersion("brain.Event:2".into()) })?;
        w.write(&Event { wall_time: now(), step: first_step as i64, what: What::SessionStart })?;
        w.flush(false)?;
        Ok(w)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, e: &Event) -> Result<(), MetricsError> {
        write_record(&mut self.file, &encode(e)).map_err(|err| MetricsError::io(&self.path, err))
    }

    /// One event holding `values` (tag, value) at `step`, stored as 32-bit floats.
    pub(crate) fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        let values = values.iter().map(|(tag, v)| (tag.to_string(), *v as f32)).collect();
        self.write(&Event { wall_time: now(), step: step as i64, what: What::Scalars(values) })
    }

    /// One text summary (TensorBoard's TEXT tab) at `step`.
    pub(crate) fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<(), MetricsError> {
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            what: What::Text(vec![(tag.to_string(), text.to_string())]),
        })
    }

    /// Hands buffered events to the OS (visible to a running TensorBoard); `sync` also fsyncs.
    pub(crate) fn flush(&mut self, sync: bool) -> Result<(), MetricsError> {
        self.file.flush().map_err(|e| MetricsError::io(&self.path, e))?;
        if sync {
            self.file.get_ref().sync_data().map_err(|e| MetricsError::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Reads an event file back: every record's CRCs checked, every event decoded.
pub(crate) fn read_events(path: &Path) -> Result<Vec<Event>, MetricsError> {
    let bad = |what: String| MetricsError::EventFile { path: path.into(), what };
    let bytes = std::fs::read(path).map_err(|e| MetricsError::io(path, e))?;
    let records = super::tfrecord::read_records(&bytes).map_err(bad)?;
    records
        .iter()
        .enumerate()
        .map(|(i, r)| super::event_proto::decode(r).map_err(|e| bad(format!("event {i}: {e}"))))
        .collect()
}

/// One scalar of an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct TbScalar {
    pub step: i64,
    pub wall_time: f64,
    pub tag: String,
    pub value: f32,
}

/// Every scalar in an event file written by [`super::MetricsWriter`] (CRCs checked), in order;
/// for tools and end-to-end tests that check a run without TensorBoard.
pub fn read_tensorboard_scalars(path: &Path) -> Result<Vec<TbScalar>, MetricsError> {
    let mut out = Vec::new();
    for e in read_events(path)? {
        if let What::Scalars(values) = e.what {
            out.extend(values.into_iter().map(|(tag, value)| TbScalar {
                step: e.step,
                wall_time: e.wall_time,
                tag,
                value,
            }));
        }
    }
    Ok(out)
}
