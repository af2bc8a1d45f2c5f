//! Checkpoint directories: Hugging Face key/shape/config layout, bit-exact round trip, atomic
//! writes and pruning to the newest K.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use mamba_trainer::checkpoint::{list_checkpoints, load_model, save_checkpoint, CheckpointContents, TrainerState};
use mamba_trainer::config::TrainConfig;
use mamba_trainer::model::{MambaConfig, Params};

fn state(step: usize, model: &MambaConfig) -> TrainerState {
    TrainerState {
        version: mamba_trainer::VERSION.into(),
        git_hash: mamba_trainer::GIT_HASH.into(),
        step,
        tokens: 123 * step as u64,
        seed: 7,
        data_position: serde_json::json!({"anything": step}),
        seq_len: 16,
        model: model.clone(),
        config: TrainConfig::default(),
        last_val_loss: Some(3.5),
    }
}

#[test]
fn hf_layout_of_the_130m_model() {
    // Names and shapes of state-spaces/mamba-130m-hf (layer 0; every layer is the same), vocab
    // padded to 50264 instead of 50280.
    let cfg = MambaConfig::preset("130m").unwrap();
    let shapes: HashMap<String, Vec<usize>> = cfg.param_shapes().into_iter().collect();
    let expect: &[(&str, &[usize])] = &[
        ("backbone.embeddings.weight", &[50264, 768]),
        ("backbone.norm_f.weight", &[768]),
        ("backbone.layers.0.norm.weight", &[768]),
        ("backbone.layers.0.mixer.in_proj.weight", &[3072, 768]),
        ("backbone.layers.0.mixer.conv1d.weight", &[1536, 1, 4]),
        ("backbone.layers.0.mixer.conv1d.bias", &[1536]),
        ("backbone.layers.0.mixer.x_proj.weight", &[80, 1536]),
        ("backbone.layers.0.mixer.dt_proj.weight", &[1536, 48]),
        ("backbone.layers.0.mixer.dt_proj.bias", &[1536]),
        ("backbone.layers.0.mixer.A_log", &[1536, 16]),
        ("backbone.layers.0.mixer.D", &[1536]),
        ("backbone.layers.0.mixer.out_proj.weight", &[768, 1536]),
    ];
    for (name, shape) in expect {
        assert_eq!(shapes.get(*name).map(|s| s.as_slice()), Some(*shape), "{name}");
    }
    assert_eq!(shapes.len(), 2 + 24 * 10);
    assert!(shapes.contains_key("backbone.layers.23.mixer.A_log"));
    assert_eq!(cfg.n_params(), 129_123_072, "the 130m preset has 129.1M parameters");
}

#[test]
fn round_trip_is_bit_exact_and_config_json_is_hf() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    let opt_state = vec![("adamw.m.x".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())];
    let st = state(5, &cfg);
    let ckpt = save_checkpoint(
        dir.path(),
        CheckpointContents { model: &cfg, params: &params, optimizer_state: opt_state, state: &st },
        3,
    )
    .unwrap();
    assert_eq!(ckpt.file_name().unwrap(), "ckpt-000005");
    for f in ["model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json"] {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }

    // Tensors: same names, shapes and bits.
    let loaded = load_model(&ckpt).unwrap();
    assert_eq!(loaded.config.param_shapes(), cfg.param_shapes());
    for (name, t) in params.tensors() {
        let back = &loaded.tensors[&name];
        assert_eq!(back.dims(), t.dims(), "{name}");
        let a: Vec<u32> = t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
        let b: Vec<u32> = back.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
        assert_eq!(a, b, "{name}");
    }
    assert_eq!(TrainerState::load(&ckpt).unwrap(), st);

    // transformers refuses safetensors without {"format": "pt"} metadata.
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));

    // config.json fields MambaForCausalLM.from_pretrained reads.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    let want = serde_json::json!({
        "architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": 8, "state_size": 4,
        "num_hidden_layers": 2, "vocab_size": 64, "expand": 2, "conv_kernel": 4, "time_step_rank": 1,
        "intermediate_size": 16, "layer_norm_epsilon": 1e-5, "use_bias": false, "use_conv_bias": true,
        "hidden_act": "silu", "residual_in_fp32": true, "tie_word_embeddings": true,
        "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256,
        "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 0.0001, "time_step_scale": 1.0,
        "time_step_init_scheme": "random", "rescale_prenorm_residual": false, "torch_dtype": "float32"
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(json.get(k), Some(v), "config.json field {k}");
    }
}

#[test]
fn keeps_the_newest_k_and_cleans_up_unfinished_saves() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    // A crashed save leaves a .tmp directory: never listed, removed by the next save.
    std::fs::create_dir_all(dir.path().join("ckpt-000099.tmp")).unwrap();
    for step in [1, 2, 3, 4] {
        let st = state(step, &cfg);
        save_checkpoint(
            dir.path(),
            CheckpointContents { model: &cfg, params: &params, optimizer_state: vec![], state: &st },
            2,
        )
        .unwrap();
    }
    let steps: Vec<usize> = list_checkpoints(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![3, 4]);
    assert!(!dir.path().join("ckpt-000099.tmp").exists());
}

#[test]
fn loading_checks_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    let st = state(1, &cfg);
    let ckpt = save_checkpoint(
        dir.path(),
        CheckpointContents { model: &cfg, params: &params, optimizer_state: vec![], state: &st },
        2,
    )
    .unwrap();
    let mut loaded = load_model(&ckpt).unwrap();
    loaded.tensors.remove("backbone.layers.1.mixer.D");
    let err = Params::from_tensors(&loaded.config, loaded.tensors, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("backbone.layers.1.mixer.D"), "{err}");
    // A config.json that is not a Mamba config names the file.
    std::fs::write(ckpt.join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    let err = format!("{:#}", load_model(&ckpt).err().unwrap());
    assert!(err.contains("config.json"), "{err}");
}
