//! Text → token ids. The default is GPT-2 built from the r50k ranks that `tiktoken-rs` ships
//! (no network, no file from the user); ids equal GPT-2's `tokenizer.json` (tested). Any other
//! `tokenizer.json`, local or from a Hub model repo, goes through the `tokenizers` crate.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, bail, Context, Result};

use crate::gpt2_bpe::{self, Gpt2};

/// Name of the built-in tokenizer, as written in the manifest.
pub const GPT2: &str = "gpt2";

pub enum Tokenizer {
    /// GPT-2 BPE (tiktoken `r50k_base` with a hand-written split), eot = 50256, vocab = 50257.
    Gpt2(Box<Gpt2>),
    HuggingFace {
        tokenizer: Box<tokenizers::Tokenizer>,
        vocab_size: u32,
        eot_id: u32,
    },
}

impl Tokenizer {
    /// `gpt2`, a path to a tokenizer.json, or a Hub model repo (`owner/name`) holding one. A stop
    /// request abandons a download at once (`Interrupted`).
    pub fn load(spec: &str, eot_token: &str, endpoint: Option<&str>, stop: &AtomicBool) -> Result<Tokenizer> {
        if spec == GPT2 {
            return Ok(Tokenizer::Gpt2(Box::new(Gpt2::new()?)));
        }
        let path = Path::new(spec);
        let file = if path.exists() {
            path.to_path_buf()
        } else if spec.split('/').count() == 2 && !spec.ends_with(".json") {
            let (repo, endpoint) = (spec.to_string(), endpoint.map(str::to_string));
            mamba_shards::stop_signal::run_unless_stopped(stop, move || {
                crate::hub::download_model_file(&repo, "tokenizer.json", endpoint.as_deref())
            })
            .ok_or(crate::Interrupted)?
            .with_context(|| format!("fetching tokenizer.json of Hub repo {spec}"))?
        } else {
            bail!("--tokenizer {spec}: no such file, and not a Hub repo name (owner/name)");
        };
        let tokenizer = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| anyhow!("loading tokenizer {}: {e}", file.display()))?;
        let vocab_size = tokenizer.get_vocab_size(true) as u32;
        let eot_id = tokenizer.token_to_id(eot_token).ok_or_else(|| {
            anyhow!("tokenizer {}: has no end-of-text token {eot_token:?} (see --eot-token)", file.display())
        })?;
        Ok(Tokenizer::HuggingFace { tokenizer: Box::new(tokenizer), vocab_size, eot_id })
    }

    pub fn vocab_size(&self) -> u32 {
        match self {
            Tokenizer::Gpt2(_) => gpt2_bpe::VOCAB,
            Tokenizer::HuggingFace { vocab_size, .. } => *vocab_size,
        }
    }

    pub fn eot_id(&self) -> u32 {
        match self {
            Tokenizer::Gpt2(_) => gpt2_bpe::EOT,
            Tokenizer::HuggingFace { eot_id, .. } => *eot_id,
        }
    }

    /// Token ids of a document's text; special-token strings inside the text are ordinary text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Gpt2(gpt2) => gpt2.encode(text),
            Tokenizer::HuggingFace { tokenizer, .. } => {
                Ok(tokenizer.encode_fast(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?.get_ids().to_vec())
            }
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Gpt2(gpt2) => {
                // Decode bytes leniently: a sample may cut a multi-byte character in two.
                let bytes: Vec<u8> = gpt2.decode_bytes(ids)?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::HuggingFace { tokenizer, .. } => {
                tokenizer.decode(ids, false).map_err(|e| anyhow!("decoding: {e}"))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_known_ids() {
        let t = Tokenizer::load(GPT2, "<|endoftext|>", None, &AtomicBool::new(false)).unwrap();
        assert_eq!(t.encode("Hello world").unwrap(), vec![15496, 995]);
        // The eot string inside a document is text, not the special token.
        assert!(!t.encode("a<|endoftext|>b").unwrap().contains(&50256));
        assert_eq!(t.decode(&[15496, 995]).unwrap(), "Hello world");
    }
}
