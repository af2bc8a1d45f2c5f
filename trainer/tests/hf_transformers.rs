//! `MambaForCausalLM.from_pretrained(dir)` loads our checkpoint unchanged and gives the same
//! logits; a checkpoint of a GPT-2-vocabulary model also loads with `AutoTokenizer` and the
//! `text-generation` pipeline (its tokenizer.json, tokenizer_config.json, generation_config.json). Needs python3 with torch + transformers, so it is ignored by default:
//! `cargo test -p mamba-trainer --test hf_transformers -- --ignored`. With `HF_CHECK_DIR=DIR` the
//! checkpoint and expected logits are kept in DIR (to run tests/hf/check_transformers.py elsewhere).
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use mamba_trainer::checkpoint::{save_checkpoint, CheckpointContents, TrainerState};
use mamba_trainer::config::TrainConfig;
use mamba_trainer::model::{MambaConfig, MambaLM, Params};

#[test]
#[ignore = "needs python3 with torch and transformers"]
fn transformers_loads_our_checkpoint_with_the_same_logits() {
    let keep = std::env::var_os("HF_CHECK_DIR").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&run_dir).unwrap();
    let cfg =
        MambaConfig { d_model: 32, n_layer: 2, d_state: 8, vocab_size: 100, ..MambaConfig::preset("micro").unwrap() };
    let params = Params::init(&cfg, 1, &Device::Cpu).unwrap();
    let state = TrainerState {
        version: mamba_trainer::VERSION.into(),
        git_hash: mamba_trainer::GIT_HASH.into(),
        step: 0,
        tokens: 0,
        seed: 1,
        data_position: serde_json::Value::Null,
        seq_len: 16,
        model: cfg.clone(),
        config: TrainConfig::default(),
        last_val_loss: None,
    };
    let ckpt = save_checkpoint(
        &run_dir,
        CheckpointContents { model: &cfg, params: &params, optimizer_state: vec![], state: &state },
        1,
    )
    .unwrap();
    let model = MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 100).collect();
    let logits = model.forward(&Tensor::new(tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()).unwrap();
    let logits: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
    std::fs::write(ckpt.join("expected.json"), serde_json::json!({ "tokens": tokens, "logits": logits }).to_string())
        .unwrap();
    // A GPT-2-vocabulary model: its checkpoint carries the tokenizer and generation files.
    let gpt2_cfg = MambaConfig { vocab_size: 50257, ..cfg.clone() };
    let gpt2_params = Params::init(&gpt2_cfg, 1, &Device::Cpu).unwrap();
    let gpt2_state = TrainerState { model: gpt2_cfg.clone(), ..state.clone() };
    std::fs::create_dir_all(run_dir.join("gpt2")).unwrap();
    let gpt2_ckpt = save_checkpoint(
        &run_dir.join("gpt2"),
        CheckpointContents { model: &gpt2_cfg, params: &gpt2_params, optimizer_state: vec![], state: &gpt2_state },
        1,
    )
    .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(gpt2_ckpt.join(f).is_file(), "{f}");
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf/check_transformers.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&ckpt)
        .arg(&gpt2_ckpt)
        .output()
        .expect("running python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
}

/// The large presets (370m, 790m, 1.4b, and the 130m beside them): transformers builds from our
/// config.json a model with exactly our parameter names and shapes (on the meta device, so no
/// weights are written).
#[test]
#[ignore = "needs python3 with torch and transformers"]
fn transformers_builds_the_large_presets_with_our_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for name in ["130m", "370m", "790m", "1.4b"] {
        let cfg = MambaConfig::preset(name).unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let hf = mamba_trainer::checkpoint::hf_config::HfMambaConfig::from_model(&cfg);
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&hf).unwrap()).unwrap();
        let shapes: serde_json::Map<String, serde_json::Value> =
            cfg.param_shapes().into_iter().map(|(n, s)| (n, serde_json::json!(s))).collect();
        std::fs::write(dir.join("shapes.json"), serde_json::Value::Object(shapes).to_string()).unwrap();
        dirs.push(dir);
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf/check_shapes.py");
    let out = std::process::Command::new("python3").arg(&script).args(&dirs).output().expect("running python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
}
