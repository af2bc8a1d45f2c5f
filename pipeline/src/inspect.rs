//! `pipeline inspect FILE|DIR`: checksum verification of every frame of every shard, a summary
//! per split (shards, sequence range, chunks, bytes; `--all`: one line per shard), a decoded text
//! sample per split, and for a directory the manifest's summary. Shards with errors are always
//! named.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mamba_shards::ring::list_shards;
use mamba_shards::{Manifest, ShardReader, Split};

use crate::config::InspectArgs;
use crate::tokenizer::{Tokenizer, GPT2};

/// What the shards of one split add up to.
#[derive(Default)]
struct SplitSummary {
    shards: u64,
    seqs: Option<(u64, u64)>,
    chunks: u64,
    tokens: u64,
    bytes: u64,
    errors: u64,
}

impl SplitSummary {
    fn line(&self, name: &str) -> String {
        let seqs = self.seqs.map_or(String::new(), |(a, b)| format!(" (seq {a}..={b})"));
        let verdict =
            if self.errors == 0 { "checksums ok".to_string() } else { format!("{} with ERRORS", self.errors) };
        format!(
            "{name}: {} shards{seqs}, {} chunks, {} tokens, {} bytes ({:.2} bytes/token), {verdict}",
            self.shards,
            self.chunks,
            self.tokens,
            self.bytes,
            self.bytes as f64 / (self.tokens as f64).max(1.0)
        )
    }
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let meta = std::fs::metadata(&args.path).with_context(|| format!("inspect {}", args.path.display()))?;
    let (dir, shards): (PathBuf, Vec<PathBuf>) = if meta.is_dir() {
        let mut all = Vec::new();
        for split in Split::ALL {
            all.extend(list_shards(&args.path, split)?.into_iter().map(|(_, p)| p));
        }
        (args.path.clone(), all)
    } else {
        (args.path.parent().map(Path::to_path_buf).unwrap_or_default(), vec![args.path.clone()])
    };
    let manifest = Manifest::read(&dir).ok().flatten();
    if let Some(m) = &manifest {
        println!(
            "manifest: finished={} ({}) tokenizer={} seq_len={} vocab={} eot={} | train next_seq={} chunks={} tokens={} | val next_seq={} chunks={} tokens={} | skipped files={}",
            m.finished,
            if m.finish_reason.is_empty() { "running" } else { &m.finish_reason },
            m.tokenizer,
            m.params.seq_len(),
            m.params.vocab_size,
            m.params.eot_id,
            m.train.next_seq,
            m.train.chunks,
            m.train.tokens,
            m.val.next_seq,
            m.val.chunks,
            m.val.tokens,
            m.skipped_files.len()
        );
    }
    if shards.is_empty() {
        bail!("{}: no shard files", args.path.display());
    }
    let spec = args
        .tokenizer
        .clone()
        .or_else(|| manifest.as_ref().map(|m| m.tokenizer.clone()))
        .unwrap_or_else(|| GPT2.into());
    let tokenizer = Tokenizer::load(&spec, "<|endoftext|>", None, &std::sync::atomic::AtomicBool::new(false)).ok();
    // Every shard line for a single file or with --all; otherwise only those with errors.
    let every_shard = args.all || !meta.is_dir();

    let (mut chunks, mut bytes, mut failures) = (0u64, 0u64, Vec::new());
    let mut summaries: Vec<(Option<Split>, SplitSummary)> = Vec::new();
    let mut samples = Vec::new();
    for path in &shards {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let split = mamba_shards::format::parse_shard_file_name(&file_name).map(|(s, _)| s);
        let at = match summaries.iter().position(|(s, _)| *s == split) {
            Some(i) => i,
            None => {
                summaries.push((split, SplitSummary::default()));
                summaries.len() - 1
            }
        };
        let sum = &mut summaries[at].1;
        sum.shards += 1;
        let reader = match ShardReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                println!("{}: ERROR {e}", path.display());
                failures.push(e.to_string());
                sum.errors += 1;
                continue;
            }
        };
        let h = *reader.header();
        let verdict = match reader.verify() {
            Ok(()) => "checksums ok".to_string(),
            Err(e) => {
                failures.push(e.to_string());
                sum.errors += 1;
                format!("ERROR {e}")
            }
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let tokens = h.n_chunks as u64 * h.seq_len() as u64;
        if every_shard || verdict != "checksums ok" {
            println!(
                "{file_name}: seq={} chunks={} chunk_tokens={} token_bytes={} vocab={} eot={} first_token={} bytes={} ({:.2} bytes/token) {verdict}",
                h.seq,
                h.n_chunks,
                h.chunk_tokens,
                h.token_bytes,
                h.vocab_size,
                h.eot_id,
                h.first_token,
                size,
                size as f64 / (tokens as f64).max(1.0)
            );
        }
        sum.seqs = Some(sum.seqs.map_or((h.seq, h.seq), |(a, b)| (a.min(h.seq), b.max(h.seq))));
        sum.chunks += h.n_chunks as u64;
        sum.tokens += tokens;
        sum.bytes += size;
        chunks += h.n_chunks as u64;
        bytes += size;
        // One decoded sample per split: the first shard's first chunk.
        if let (Some(t), true) = (&tokenizer, h.n_chunks > 0 && !samples.iter().any(|(s, _)| *s == split)) {
            if let Ok(chunk) = reader.read_chunk(0) {
                let n = args.sample_tokens.min(chunk.len());
                let text = t.decode(&chunk[..n]).unwrap_or_else(|e| format!("<{e}>"));
                samples.push((split, format!("  sample ({n} tokens, {spec}): {text:?}")));
            }
        }
    }
    for (split, sum) in &summaries {
        let name = split.map_or("other".to_string(), |s| s.to_string());
        if !every_shard {
            println!("{}", sum.line(&name));
        }
        for (_, line) in samples.iter().filter(|(s, _)| s == split) {
            println!("{line}");
        }
    }
    println!("{} shards, {chunks} chunks, {bytes} bytes, {} with errors", shards.len(), failures.len());
    if !failures.is_empty() {
        bail!("{} of {} shards failed verification:\n  {}", failures.len(), shards.len(), failures.join("\n  "));
    }
    Ok(())
}
