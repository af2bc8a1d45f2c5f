//! The tokenizer and generation files of a checkpoint, so that the usual Hugging Face calls work
//! on it offline: `AutoTokenizer.from_pretrained(ckpt)` and `pipeline("text-generation",
//! model=ckpt)`.
//!
//! - `tokenizer.json`: GPT-2's tokenizer (byte-level BPE, 50,257 tokens, 50,000 merges), embedded
//!   in the binary zstd-compressed (`trainer/assets/gpt2-tokenizer.json.zst`, ~480 KB; notice in
//!   `trainer/assets/GPT2-TOKENIZER-NOTICE.txt`);
//! - `tokenizer_config.json`: the fast GPT-2 tokenizer class, `<|endoftext|>` as bos/eos/unk/pad,
//!   the context length of the training data as `model_max_length`;
//! - `generation_config.json`: bos/eos/pad = 50256 (as config.json).
//!
//! Written only for models with GPT-2's vocabulary (50,257 tokens): data from the built-in
//! tokenizer of the pipeline.

use std::path::Path;

use anyhow::{Context, Result};

use super::hf_config::GPT2_EOT;
use super::model_files::sync_file;
use crate::model::MambaConfig;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// GPT-2's vocabulary size.
pub const GPT2_VOCAB: usize = 50257;

static GPT2_TOKENIZER_ZST: &[u8] = include_bytes!("../../assets/gpt2-tokenizer.json.zst");

/// GPT-2's tokenizer.json (HF `tokenizers` format), from the copy built into the binary.
pub fn gpt2_tokenizer_json() -> Result<Vec<u8>> {
    zstd::decode_all(GPT2_TOKENIZER_ZST).context("decompressing the built-in GPT-2 tokenizer.json")
}

/// True when the model's token ids are GPT-2's (the files below describe GPT-2's tokenizer).
pub fn has_gpt2_vocab(cfg: &MambaConfig) -> bool {
    cfg.vocab_size == GPT2_VOCAB
}

/// Writes tokenizer.json, tokenizer_config.json and generation_config.json into `dir`
/// (each fsynced). `seq_len`: the training context, the tokenizer's `model_max_length`.
pub fn write_tokenizer_files(dir: &Path, seq_len: usize) -> Result<()> {
    let eot = "<|endoftext|>";
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": seq_len,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "pad_token": eot,
        "add_prefix_space": false,
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
    });
    let generation_config = serde_json::json!({
        "bos_token_id": GPT2_EOT,
        "eos_token_id": GPT2_EOT,
        "pad_token_id": GPT2_EOT,
    });
    let files: [(&str, Vec<u8>); 3] = [
        (TOKENIZER_FILE, gpt2_tokenizer_json()?),
        (TOKENIZER_CONFIG_FILE, (serde_json::to_string_pretty(&tokenizer_config)? + "\n").into_bytes()),
        (GENERATION_CONFIG_FILE, (serde_json::to_string_pretty(&generation_config)? + "\n").into_bytes()),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        sync_file(&path)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The written tokenizer.json has GPT-2's vocabulary, merges and special token, as in
    /// `../shared/tokenizers/gpt2/tokenizer.json`, and the `tokenizers` crate loads it and
    /// encodes as the built-in tokenizer (tiktoken r50k_base) does.
    #[test]
    fn written_tokenizer_is_gpt2s() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer_files(dir.path(), 1024).unwrap();
        let ours: Value = serde_json::from_slice(&std::fs::read(dir.path().join(TOKENIZER_FILE)).unwrap()).unwrap();
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tokenizers/gpt2/tokenizer.json");
        let theirs: Value = serde_json::from_slice(&std::fs::read(&reference).unwrap()).unwrap();
        assert_eq!(ours["model"]["vocab"], theirs["model"]["vocab"]);
        assert_eq!(ours["model"]["merges"], theirs["model"]["merges"]);
        assert_eq!(ours["model"]["vocab"].as_object().unwrap().len(), GPT2_VOCAB);
        assert_eq!(ours["model"]["merges"].as_array().unwrap().len(), 50_000);
        assert_eq!(ours, theirs, "the whole file equals the reference");

        let tok = tokenizers::Tokenizer::from_file(dir.path().join(TOKENIZER_FILE)).unwrap();
        let text = "The meaning of life is 42, isn't it?\n\n  Ünïcödé <|endoftext|>";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, tiktoken_rs::r50k_base().unwrap().encode_with_special_tokens(text));
        assert_eq!(tok.decode(&ids, false).unwrap(), text);

        let tc: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(TOKENIZER_CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!((tc["eos_token"].as_str(), tc["model_max_length"].as_u64()), (Some("<|endoftext|>"), Some(1024)));
        let gc: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(GENERATION_CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!((gc["eos_token_id"].as_u64(), gc["pad_token_id"].as_u64()), (Some(50256), Some(50256)));
    }
}
