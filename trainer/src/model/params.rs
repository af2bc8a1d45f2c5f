//! The trainable parameters: candle `Var`s under their Hugging Face names, in model order.
//! The model reads them through a `VarBuilder` (`vb.pp("mixer").get(..)`), so the names the model
//! asks for are exactly the names in `model.safetensors`.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;

use super::config::MambaConfig;

pub struct Params {
    named: Vec<(String, Var)>,
}

impl Params {
    /// Wraps `tensors` (any device) as f32 `Var`s on `device`. Every name and shape `cfg` needs
    /// must be present; extra names are an error too (they would be silently ignored otherwise).
    pub fn from_tensors(cfg: &MambaConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Params> {
        Self::from_tensors_dtype(cfg, tensors, device, DType::F32)
    }

    /// As [`Params::from_tensors`] with master weights of `dtype` (F64 for gradient checks).
    pub fn from_tensors_dtype(
        cfg: &MambaConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Params> {
        let mut tensors = tensors;
        let mut named = Vec::new();
        for (name, shape) in cfg.param_shapes() {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name} (shape {shape:?})")))?;
            if t.dims() != shape.as_slice() {
                candle_core::bail!("parameter {name} has shape {:?}, the model config needs {shape:?}", t.dims());
            }
            let t = t.to_dtype(dtype)?.to_device(device)?.contiguous()?;
            named.push((name, Var::from_tensor(&t)?));
        }
        if let Some(extra) = tensors.keys().min() {
            candle_core::bail!("unexpected parameter {extra} ({} unused tensors)", tensors.len());
        }
        Ok(Params { named })
    }

    /// Freshly initialised parameters (see `init.rs`), drawn on the CPU and moved to `device`.
    pub fn init(cfg: &MambaConfig, seed: u64, device: &Device) -> Result<Params> {
        let tensors = super::init::init_params(cfg, seed)?.into_iter().collect();
        Params::from_tensors(cfg, tensors, device)
    }

    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.named
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.named.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn n_params(&self) -> usize {
        self.named.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A builder whose `get` returns the `Var`s' own tensors (gradients flow to them).
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = self.named.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let dtype = self.named.first().map_or(DType::F32, |(_, v)| v.dtype());
        VarBuilder::from_tensors(map, dtype, device)
    }

    /// Detached copies of the current values, for saving.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.named.iter().map(|(n, v)| (n.clone(), v.as_detached_tensor())).collect()
    }
}
