//! The reading thread: walks the source files in order from a start position and sends batches of
//! documents (text, id hash, position) through a bounded channel, so reading and decoding overlap
//! with tokenizing while memory stays bounded (one row group's `text`/`id` column chunks plus a
//! few batches in flight).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use futures::StreamExt;
use mamba_shards::manifest::SkippedFile;
use mamba_shards::DocPos;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use crate::config::OnError;
use crate::range_reader::Http;
use crate::source::SourceFile;
use crate::val_split::fnv1a64;

pub struct Doc {
    pub pos: DocPos,
    /// FNV-1a 64 of the `id` column's bytes (of the text when the file has no `id` column).
    pub id_hash: u64,
    pub text: String,
}

pub enum SourceEvent {
    /// Documents in source order.
    Batch(Vec<Doc>),
    /// A file has been read to its end.
    FileDone { file: u64 },
    /// `--on-error skip`: the file was given up from `from_row` on.
    Skipped(SkippedFile),
}

pub struct ReaderConfig {
    pub files: Vec<SourceFile>,
    pub start: DocPos,
    /// Files skipped by an earlier run; they are skipped from the same row again.
    pub skipped: Vec<SkippedFile>,
    pub http: Option<Http>,
    pub on_error: OnError,
    pub bytes_read: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub batch_rows: usize,
}

/// Starts the reading thread; the receiver yields events until the source ends or an error.
pub fn spawn(cfg: ReaderConfig) -> Result<(Receiver<Result<SourceEvent>>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(2);
    let handle = std::thread::Builder::new().name("reader".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("starting the reader's tokio runtime: {e}")));
                return;
            }
        };
        rt.block_on(read_all(cfg, tx));
    })?;
    Ok((rx, handle))
}

async fn read_all(cfg: ReaderConfig, tx: SyncSender<Result<SourceEvent>>) {
    for (index, file) in cfg.files.iter().enumerate().skip(cfg.start.file as usize) {
        let index = index as u64;
        let first_row = if index == cfg.start.file { cfg.start.row } else { 0 };
        let end_row = cfg.skipped.iter().find(|s| s.file == index).map(|s| s.from_row).unwrap_or(u64::MAX);
        let mut next_row = first_row;
        // A stop request abandons the file's network waits at once (the main loop then ends).
        let read = crate::cancel::unless_stopped(
            &cfg.stop,
            read_file(&cfg, index, file, first_row, end_row, &mut next_row, &tx),
        )
        .await;
        let Ok(result) = read else { return };
        if cfg.stop.load(Ordering::Relaxed) {
            return;
        }
        let event = match result {
            Ok(true) => Ok(SourceEvent::FileDone { file: index }),
            Ok(false) => return, // the receiver hung up
            Err(e) => {
                let e = e.context(format!("source file {} ({})", index, file.name()));
                match cfg.on_error {
                    OnError::Fail => Err(e),
                    OnError::Skip => Ok(SourceEvent::Skipped(SkippedFile {
                        file: index,
                        name: file.name(),
                        from_row: next_row,
                        error: format!("{e:#}"),
                    })),
                }
            }
        };
        let failed = event.is_err();
        if tx.send(event).is_err() || failed {
            return;
        }
    }
}

/// Reads rows `first_row..end_row` of one file. Ok(false) when the receiver is gone.
async fn read_file(
    cfg: &ReaderConfig,
    index: u64,
    file: &SourceFile,
    first_row: u64,
    end_row: u64,
    next_row: &mut u64,
    tx: &SyncSender<Result<SourceEvent>>,
) -> Result<bool> {
    let mut reader = file.open(cfg.http.as_ref(), cfg.bytes_read.clone())?;
    let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(|e| anyhow!("reading the parquet footer ({} bytes): {e}", reader.size()))?;
    let schema = meta.schema().clone();
    let columns = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    let text_idx = schema.index_of("text").map_err(|_| anyhow!("no `text` column (columns: {})", columns()))?;
    let id_idx = schema.index_of("id").ok();
    let mut roots = vec![text_idx];
    roots.extend(id_idx);
    let mask = ProjectionMask::roots(meta.parquet_schema(), roots);

    let mut rg_start = 0u64;
    let row_groups: Vec<u64> = meta.metadata().row_groups().iter().map(|rg| rg.num_rows() as u64).collect();
    for (rg, &n_rows) in row_groups.iter().enumerate() {
        let rg_end = rg_start + n_rows;
        let (lo, hi) = (rg_start, rg_end);
        rg_start = rg_end;
        if hi <= first_row {
            continue;
        }
        if lo >= end_row {
            break;
        }
        let at = |row: u64| format!("row group {rg} (rows {lo}..{hi}), row {row}");
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), meta.clone())
            .with_projection(mask.clone())
            .with_row_groups(vec![rg])
            .with_batch_size(cfg.batch_rows)
            .build()
            .with_context(|| at(lo))?;
        let mut row = lo;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| anyhow!("{}: {e}", at(row)))?;
            let texts = strings(batch.column_by_name("text").context("projected `text` column missing")?)
                .map_err(|(i, e)| anyhow!("{}: `text` {e}", at(row + i as u64)))?;
            let ids = match batch.column_by_name("id") {
                Some(c) => Some(strings_as_bytes(c).map_err(|(i, e)| anyhow!("{}: `id` {e}", at(row + i as u64)))?),
                None => None,
            };
            let mut docs = Vec::with_capacity(texts.len());
            for (i, text) in texts.into_iter().enumerate() {
                let r = row + i as u64;
                if r < first_row || r >= end_row {
                    continue;
                }
                let Some(text) = text else { continue }; // a null text is no document
                let id_hash = match ids.as_ref().and_then(|ids| ids[i].as_ref()) {
                    Some(id) => fnv1a64(id),
                    None => fnv1a64(text.as_bytes()),
                };
                docs.push(Doc { pos: DocPos { file: index, row: r }, id_hash, text });
            }
            row += batch.num_rows() as u64;
            *next_row = row.min(end_row);
            if !docs.is_empty() && tx.send(Ok(SourceEvent::Batch(docs))).is_err() {
                return Ok(false);
            }
            if cfg.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if row >= end_row {
                break;
            }
        }
        if row != hi && row < end_row {
            return Err(anyhow!("{}: the row group promised {n_rows} rows but ended early", at(row)));
        }
    }
    Ok(true)
}

/// A string (or binary) column as owned UTF-8 strings; invalid UTF-8 → (row in batch, message).
fn strings(col: &ArrayRef) -> Result<Vec<Option<String>>, (usize, String)> {
    let raw = strings_as_bytes(col)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, b)| match b {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|e| (i, format!("is not valid UTF-8: {e}"))),
        })
        .collect()
}

fn strings_as_bytes(col: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>, (usize, String)> {
    fn collect<'a>(n: usize, get: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<Option<Vec<u8>>> {
        (0..n).map(|i| get(i).map(<[u8]>::to_vec)).collect()
    }
    let n = col.len();
    let valid = |i: usize| col.is_valid(i);
    Ok(match col.data_type() {
        DataType::Utf8 => collect(n, |i| valid(i).then(|| col.as_string::<i32>().value(i).as_bytes())),
        DataType::LargeUtf8 => collect(n, |i| valid(i).then(|| col.as_string::<i64>().value(i).as_bytes())),
        DataType::Utf8View => collect(n, |i| valid(i).then(|| col.as_string_view().value(i).as_bytes())),
        DataType::Binary => collect(n, |i| valid(i).then(|| col.as_binary::<i32>().value(i))),
        DataType::LargeBinary => collect(n, |i| valid(i).then(|| col.as_binary::<i64>().value(i))),
        DataType::BinaryView => collect(n, |i| valid(i).then(|| col.as_binary_view().value(i))),
        other => return Err((0, format!("has type {other}, expected a string column"))),
    })
}
