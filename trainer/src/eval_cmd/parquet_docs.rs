//! Documents from local parquet files in the FineWeb schema: the `text` column, file after file
//! (a folder is searched recursively for `*.parquet`, sorted by path, as `pipeline --input` does),
//! row group after row group. A null `text` is no document (as in the pipeline). Every error
//! names the file, and the row group and row where it is known.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

/// Rows decoded at a time.
const BATCH_ROWS: usize = 256;

/// `path` itself when it is a file, else every `*.parquet` below the folder; sorted.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect(path, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading folder {}", dir.display()))?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the documents of `files` in order, a batch of rows at a time.
pub struct ParquetDocs {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<OpenFile>,
    docs: u64,
}

/// One file being read: its footer, and the row group in progress.
struct OpenFile {
    path: PathBuf,
    file: File,
    meta: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// Rows of each row group.
    row_groups: Vec<u64>,
    next_group: usize,
    /// Row of the file where the next row group starts.
    next_group_row: u64,
    group: Option<OpenGroup>,
}

struct OpenGroup {
    index: usize,
    rows: std::ops::Range<u64>,
    /// The next row of the file to be decoded.
    row: u64,
    reader: ParquetRecordBatchReader,
}

impl ParquetDocs {
    pub fn new(files: Vec<PathBuf>) -> ParquetDocs {
        ParquetDocs { files, next_file: 0, current: None, docs: 0 }
    }

    /// The files to read.
    pub fn n_files(&self) -> usize {
        self.files.len()
    }

    /// Documents handed out so far.
    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// The next documents (at least one), or `None` after the last file.
    pub fn next_batch(&mut self) -> Result<Option<Vec<String>>> {
        loop {
            let Some(open) = self.current.as_mut() else {
                let Some(path) = self.files.get(self.next_file) else { return Ok(None) };
                self.next_file += 1;
                self.current = Some(OpenFile::open(path)?);
                continue;
            };
            match open.next_batch()? {
                Some(docs) if docs.is_empty() => {}
                Some(docs) => {
                    self.docs += docs.len() as u64;
                    return Ok(Some(docs));
                }
                None => self.current = None,
            }
        }
    }
}

impl OpenFile {
    fn open(path: &Path) -> Result<OpenFile> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| anyhow!("{}: not a readable parquet file: {e}", path.display()))?;
        let schema = meta.schema().clone();
        let Ok(text) = schema.index_of("text") else {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bail!("{}: no `text` column (columns: {}); expected the FineWeb schema", path.display(), columns.join(", "));
        };
        let mask = ProjectionMask::roots(meta.parquet_schema(), [text]);
        let row_groups = meta.metadata().row_groups().iter().map(|rg| rg.num_rows().max(0) as u64).collect();
        Ok(OpenFile { path: path.to_path_buf(), file, meta, mask, row_groups, next_group: 0, next_group_row: 0, group: None })
    }

    /// The next batch of documents (maybe empty when all its rows were null), `None` at the end.
    fn next_batch(&mut self) -> Result<Option<Vec<String>>> {
        loop {
            let Some(group) = self.group.as_mut() else {
                let Some(&n_rows) = self.row_groups.get(self.next_group) else { return Ok(None) };
                let index = self.next_group;
                let rows = self.next_group_row..self.next_group_row + n_rows;
                self.next_group += 1;
                self.next_group_row = rows.end;
                let file = self.file.try_clone().with_context(|| format!("{}", self.path.display()))?;
                let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                    .with_projection(self.mask.clone())
                    .with_row_groups(vec![index])
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| anyhow!("{}: row group {index} (rows {}..{}): {e}", self.path.display(), rows.start, rows.end))?;
                self.group = Some(OpenGroup { index, row: rows.start, rows, reader });
                continue;
            };
            let at = |row: u64| format!("{}: row group {} (rows {}..{}), row {row}", self.path.display(), group.index, group.rows.start, group.rows.end);
            match group.reader.next() {
                Some(batch) => {
                    let batch = batch.map_err(|e| anyhow!("{}: {e}", at(group.row)))?;
                    let col = batch.column_by_name("text").with_context(|| format!("{}: projected `text` column missing", at(group.row)))?;
                    let texts = texts(col).map_err(|(i, e)| anyhow!("{}: `text` {e}", at(group.row + i as u64)))?;
                    group.row += batch.num_rows() as u64;
                    return Ok(Some(texts));
                }
                None => {
                    if group.row != group.rows.end {
                        bail!("{}: the row group promised {} rows but ended early", at(group.row), group.rows.end - group.rows.start);
                    }
                    self.group = None;
                }
            }
        }
    }
}

/// The non-null values of a string (or binary, UTF-8) column; an error gives the row in the batch.
fn texts(col: &ArrayRef) -> Result<Vec<String>, (usize, String)> {
    let utf8 = |i: usize, b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| (i, format!("is not valid UTF-8: {e}")));
    let rows = (0..col.len()).filter(|&i| col.is_valid(i));
    match col.data_type() {
        DataType::Utf8 => Ok(rows.map(|i| col.as_string::<i32>().value(i).to_string()).collect()),
        DataType::LargeUtf8 => Ok(rows.map(|i| col.as_string::<i64>().value(i).to_string()).collect()),
        DataType::Utf8View => Ok(rows.map(|i| col.as_string_view().value(i).to_string()).collect()),
        DataType::Binary => rows.map(|i| utf8(i, col.as_binary::<i32>().value(i))).collect(),
        DataType::LargeBinary => rows.map(|i| utf8(i, col.as_binary::<i64>().value(i))).collect(),
        DataType::BinaryView => rows.map(|i| utf8(i, col.as_binary_view().value(i))).collect(),
        other => Err((0, format!("has type {other}, expected a string column"))),
    }
}
