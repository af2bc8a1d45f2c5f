//! `model.safetensors` + `config.json`: the Hugging Face half of a checkpoint directory.
//! `--init-from` accepts such a directory, or a Hub repo id (downloaded with `mamba_shards::hub`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::hf_config::HfMambaConfig;
use crate::model::{MambaConfig, Params};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Writes safetensors with `{"format": "pt"}` metadata (transformers refuses archives without it)
/// and fsyncs the file.
pub fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let mut contiguous = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        contiguous.push((name, t.to_device(&Device::Cpu)?.contiguous()?));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(contiguous, Some(metadata), path)
        .with_context(|| format!("writing {}", path.display()))?;
    sync_file(path)
}

pub fn sync_file(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {} to fsync", path.display()))?;
    f.sync_all().with_context(|| format!("fsync {}", path.display()))
}

/// Saves the model half of a checkpoint into `dir`.
pub fn save_model(dir: &Path, cfg: &MambaConfig, params: &Params) -> Result<()> {
    write_safetensors(&dir.join(MODEL_FILE), params.tensors())?;
    let json = serde_json::to_string_pretty(&HfMambaConfig::from_model(cfg))?;
    std::fs::write(dir.join(CONFIG_FILE), json + "\n")
        .with_context(|| format!("writing {}", dir.join(CONFIG_FILE).display()))?;
    sync_file(&dir.join(CONFIG_FILE))
}

/// A model read from a checkpoint: its config and its tensors (CPU, as stored).
pub struct LoadedModel {
    pub config: MambaConfig,
    pub tensors: HashMap<String, Tensor>,
    pub source: PathBuf,
}

/// Reads `config.json` + `model.safetensors` from `dir`. A tied `lm_head.weight` (written by
/// some exporters) is dropped after checking that it equals the embedding.
pub fn load_model(dir: &Path) -> Result<LoadedModel> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let hf: HfMambaConfig = serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    let config = hf.to_model().map_err(anyhow::Error::msg).with_context(|| format!("{}", cfg_path.display()))?;
    let model_path = dir.join(MODEL_FILE);
    let mut tensors = candle_core::safetensors::load(&model_path, &Device::Cpu)
        .with_context(|| format!("reading {}", model_path.display()))?;
    if let Some(head) = tensors.remove("lm_head.weight") {
        let emb = tensors.get("backbone.embeddings.weight").context("no backbone.embeddings.weight")?;
        let diff = (head.to_dtype(candle_core::DType::F32)? - emb.to_dtype(candle_core::DType::F32)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        if diff != 0.0 {
            bail!(
                "{}: lm_head.weight differs from the embedding (max |Δ| {diff}); untied heads are not supported",
                model_path.display()
            );
        }
    }
    Ok(LoadedModel { config, tensors, source: dir.to_path_buf() })
}

/// Builds the parameters of a loaded model, checking names and shapes (errors name the file).
pub fn params_from_loaded(loaded: LoadedModel, device: &Device) -> Result<(MambaConfig, Params)> {
    let path = loaded.source.join(MODEL_FILE);
    let params =
        Params::from_tensors(&loaded.config, loaded.tensors, device).with_context(|| format!("{}", path.display()))?;
    Ok((loaded.config, params))
}

/// Largest `config.json` accepted from the Hub.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `model.safetensors` accepted from the Hub (a 2.8b model in f32 is ~11 GB).
const MAX_MODEL_BYTES: u64 = 64 << 30;

/// `--init-from`: a local checkpoint directory, or a Hugging Face Hub repo id such as
/// `state-spaces/mamba-130m-hf`, downloaded (through `mamba_shards::hub`, as the pipeline does)
/// from `$HF_ENDPOINT` (else the public Hub) with the user's token into the Hub cache
/// (`$HF_HOME/hub/models--owner--name/snapshots/{commit}/`).
pub fn resolve_init_from(spec: &str) -> Result<PathBuf> {
    let local = PathBuf::from(spec);
    if local.is_dir() {
        return Ok(local);
    }
    if local.exists() {
        bail!("--init-from {spec}: not a directory (expected a checkpoint dir with {MODEL_FILE} and {CONFIG_FILE})");
    }
    if mamba_shards::hub::RepoId::parse(spec).is_err() {
        bail!("--init-from {spec}: no such directory, and not a Hub repo id of the form owner/name");
    }
    let files = [(CONFIG_FILE, MAX_CONFIG_BYTES), (MODEL_FILE, MAX_MODEL_BYTES)];
    let agent = concat!("mamba-trainer/", env!("CARGO_PKG_VERSION"));
    let paths = mamba_shards::hub::fetch_model_files(
        None,
        spec,
        "main",
        &files,
        mamba_shards::hub::RetryPolicy::default(),
        agent,
    )
    .with_context(|| format!("--init-from {spec}: downloading {CONFIG_FILE} and {MODEL_FILE} from the Hub"))?;
    let dirs: Vec<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
    match dirs.as_slice() {
        [a, b] if a == b => Ok(a.to_path_buf()),
        _ => {
            bail!("--init-from {spec}: {CONFIG_FILE} and {MODEL_FILE} were served from different revisions; try again")
        }
    }
}
