//! `pipeline inspect FILE|DIR`: each shard's header and counts, checksum verification of every
//! frame, and a decoded text sample; for a directory also the manifest's summary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mamba_shards::ring::list_shards;
use mamba_shards::{Manifest, ShardReader, Split};

use crate::config::InspectArgs;
use crate::tokenizer::{Tokenizer, GPT2};

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
            m.seq_len,
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
    let spec = args.tokenizer.clone().or_else(|| manifest.as_ref().map(|m| m.tokenizer.clone())).unwrap_or_else(|| GPT2.into());
    let tokenizer = Tokenizer::load(&spec, "<|endoftext|>", None).ok();

    let (mut chunks, mut bytes, mut failures) = (0u64, 0u64, Vec::new());
    let mut sampled = Vec::new();
    for path in &shards {
        let reader = match ShardReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                println!("{}: ERROR {e}", path.display());
                failures.push(e.to_string());
                continue;
            }
        };
        let h = *reader.header();
        let verdict = match reader.verify() {
            Ok(()) => "checksums ok".to_string(),
            Err(e) => {
                failures.push(e.to_string());
                format!("ERROR {e}")
            }
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}: seq={} chunks={} chunk_tokens={} token_bytes={} vocab={} eot={} first_token={} bytes={} ({:.2} bytes/token) {verdict}",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            h.seq,
            h.n_chunks,
            h.chunk_tokens,
            h.token_bytes,
            h.vocab_size,
            h.eot_id,
            h.first_token,
            size,
            size as f64 / (h.n_chunks as f64 * h.seq_len() as f64).max(1.0)
        );
        chunks += h.n_chunks as u64;
        bytes += size;
        // One decoded sample per split: the first shard's first chunk.
        let split = path.file_name().and_then(|n| n.to_str()).and_then(mamba_shards::format::parse_shard_file_name).map(|(s, _)| s);
        if let (Some(t), true) = (&tokenizer, h.n_chunks > 0 && !sampled.contains(&split)) {
            sampled.push(split);
            if let Ok(chunk) = reader.read_chunk(0) {
                let n = args.sample_tokens.min(chunk.len());
                let text = t.decode(&chunk[..n]).unwrap_or_else(|e| format!("<{e}>"));
                println!("  sample ({n} tokens, {spec}): {text:?}");
            }
        }
    }
    println!("{} shards, {chunks} chunks, {bytes} bytes, {} with errors", shards.len(), failures.len());
    if !failures.is_empty() {
        bail!("{} of {} shards failed verification:\n  {}", failures.len(), shards.len(), failures.join("\n  "));
    }
    Ok(())
}
