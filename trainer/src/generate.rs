//! `trainer generate`: load a checkpoint, encode the prompt with the GPT-2 tokenizer (tiktoken
//! r50k_base, built in, offline), and sample with the recurrent O(1)-per-token state
//! (HF `MambaForCausalLM.generate` with `cache_params`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{latest_checkpoint, load_model, params_from_loaded};
use crate::model::MambaLM;
use crate::sampling::{sample, Sampling};

/// GPT-2's vocabulary size; ids at or above it are padding rows of the embedding.
pub const GPT2_VOCAB: usize = 50257;
pub const GPT2_EOT: u32 = 50256;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Checkpoint directory (model.safetensors + config.json), or a run directory (its newest checkpoint).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Tokens to generate (stops early at <|endoftext|>).
    #[arg(long, default_value_t = 100)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens; 0 = all.
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with probability ≥ p; 1 = off.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A checkpoint dir, or the newest `ckpt-*` inside a run dir.
pub fn resolve_checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.join(crate::checkpoint::model_files::MODEL_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path)?.with_context(|| {
        format!("{}: neither a checkpoint (no model.safetensors) nor a run directory with checkpoints", path.display())
    })
}

/// Continues `prompt` by up to `max_tokens` tokens; returns only the new tokens.
pub fn generate_tokens(
    model: &MambaLM,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    seed: u64,
    device: &Device,
) -> Result<Vec<u32>> {
    let vocab = model.config().padded_vocab();
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        bail!("prompt token {bad} is outside the model's vocabulary of {vocab}");
    }
    let candidates = vocab.min(GPT2_VOCAB);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut state = model.zero_state(1)?;
    // An empty prompt starts from <|endoftext|>, as documents do in the training data.
    let context: Vec<u32> = if prompt.is_empty() { vec![GPT2_EOT.min(vocab as u32 - 1)] } else { prompt.to_vec() };
    let mut logits = None;
    for &t in &context {
        logits = Some(model.step(&Tensor::new(&[t], device)?, &mut state)?); // (1, V)
    }
    let mut out = Vec::with_capacity(max_tokens.min(1 << 16)); // --max-tokens is the user's: no allocation up front
    for _ in 0..max_tokens {
        let l = logits.take().context("no logits")?; // (1, V)
        let row: Vec<f32> = l.squeeze(0)?.narrow(0, 0, candidates)?.to_vec1()?; // (candidates,)
        let next = sample(&row, sampling, &mut rng);
        out.push(next);
        if next == GPT2_EOT {
            break;
        }
        logits = Some(model.step(&Tensor::new(&[next], device)?, &mut state)?);
    }
    Ok(out)
}

/// GPT-2 ids → text; a sample may cut a multi-byte character in two, so bytes decode leniently.
fn decode(bpe: &tiktoken_rs::CoreBPE, ids: &[u32]) -> Result<String> {
    let bytes = bpe.decode_bytes(ids).map_err(|e| anyhow::anyhow!("decoding the generated tokens: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `generate` subcommand: logs the checkpoint it resolved and its speed, returns the prompt
/// and its continuation.
pub fn run(args: &GenerateArgs) -> Result<String> {
    let device = crate::device::parse_device(&args.device)?;
    let dir = resolve_checkpoint_dir(&args.checkpoint)?;
    let step = crate::checkpoint::TrainerState::load(&dir)
        .ok()
        .map_or(String::new(), |s| format!(" (step {}, {} tokens trained)", s.step, s.tokens));
    tracing::info!("checkpoint {}{step}", dir.display());
    let (cfg, params) = params_from_loaded(load_model(&dir)?, &device)?;
    let model = MambaLM::new(&cfg, params.var_builder(&device))?;
    let bpe = tiktoken_rs::r50k_base().context("loading the GPT-2 tokenizer")?;
    let prompt = bpe.encode_with_special_tokens(&args.prompt);
    let sampling = Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p };
    let t0 = std::time::Instant::now();
    let new = generate_tokens(&model, &prompt, args.max_tokens, &sampling, args.seed, &device)?;
    let secs = t0.elapsed().as_secs_f64();
    tracing::info!(
        "generated {} tokens after a {}-token prompt in {secs:.2} s ({:.1} tokens/s, prompt included) on {}",
        new.len(),
        prompt.len(),
        (new.len() + prompt.len()) as f64 / secs.max(1e-9),
        args.device
    );
    Ok(format!("{}{}", args.prompt, decode(&bpe, &new)?))
}

/// The samples of `trainer train --sample-every`: a fixed prompt continued by up to
/// [`PromptSampler::TOKENS`] tokens with a fixed seed and the default sampling of `generate`
/// (temperature 0.8, top-k 50, top-p 0.95), so the samples of different steps are comparable.
pub struct PromptSampler {
    bpe: tiktoken_rs::CoreBPE,
    ids: Vec<u32>,
}

impl PromptSampler {
    pub const TOKENS: usize = 32;

    pub fn new(prompt: &str) -> Result<PromptSampler> {
        let bpe = tiktoken_rs::r50k_base().context("loading the GPT-2 tokenizer")?;
        let ids = bpe.encode_with_special_tokens(prompt);
        Ok(PromptSampler { bpe, ids })
    }

    /// The continuation of the prompt (without the prompt).
    pub fn sample(&self, model: &MambaLM, device: &Device) -> Result<String> {
        let sampling = Sampling { temperature: 0.8, top_k: 50, top_p: 0.95 };
        let new = generate_tokens(model, &self.ids, Self::TOKENS, &sampling, 0, device)?;
        decode(&self.bpe, &new)
    }
}
