//! Reading optimizer state back from a checkpoint: every tensor is looked up by name and checked
//! against the parameter it belongs to, so a checkpoint from another model or optimizer fails with
//! a clear error instead of training on misaligned state.

use super::error::{OptimError, Result};
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// The state tensor `name` from `state`, checked to have the shape of `param`, converted to f32
/// and moved to `param`'s device. A copy is made, so later changes to `state` cannot leak in.
pub fn read_state_tensor(state: &HashMap<String, Tensor>, name: &str, param: &Var) -> Result<Tensor> {
    let t = state.get(name).ok_or_else(|| OptimError::MissingState(name.to_string()))?;
    if t.dims() != param.dims() {
        return Err(OptimError::StateShapeMismatch {
            name: name.to_string(),
            expected: param.dims().to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(t.to_dtype(DType::F32)?.to_device(param.device())?.copy()?)
}

/// A compact copy of `t` in host memory, for saving: state tensors are updated in place by later
/// steps. One tensor at a time, and only its own elements: candle's `copy()` (and `to_device`) of
/// a view clones the view's whole storage, so each member of a stacked Muon momentum used to
/// clone its whole group on the device before the host copy (about 8 GB of clones for the 130m
/// model, an 8 s checkpoint on an H100; out of memory at the 1.4b model's final checkpoint).
pub fn host_copy(t: &Tensor) -> Result<Tensor> {
    Ok(t.force_contiguous()?.to_device(&candle_core::Device::Cpu)?)
}

/// For optimizers that keep the state of same-shaped parameters stacked: the (group, position in
/// the group) of each of `n` parameters, given every group's member indices in group order.
pub(crate) fn member_slots<'a>(groups: impl IntoIterator<Item = &'a [usize]>, n: usize) -> Vec<(usize, usize)> {
    let mut slots = vec![(0, 0); n];
    for (gi, members) in groups.into_iter().enumerate() {
        for (j, &i) in members.iter().enumerate() {
            slots[i] = (gi, j);
        }
    }
    slots
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn host_copy_holds_only_the_view_and_keeps_its_values() {
        // A member of a stacked group, as Muon keeps its momentum.
        let stacked =
            Var::from_tensor(&Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap().reshape((4, 3)).unwrap()).unwrap();
        let member = stacked.as_tensor().get(2).unwrap();
        let copy = host_copy(&member).unwrap();
        let (storage, layout) = copy.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else { panic!("not on the host") };
        assert_eq!((cpu.as_slice::<f32>().unwrap().len(), layout.start_offset()), (3, 0), "only the member's elements");
        drop(storage);
        stacked.set(&Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(copy.to_vec1::<f32>().unwrap(), [6.0, 7.0, 8.0], "a snapshot");
    }

    #[test]
    fn checks_presence_and_shape_and_converts() {
        let p = Var::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let mut state = HashMap::new();
        let err = read_state_tensor(&state, "adamw.m.x", &p).unwrap_err();
        assert!(matches!(err, OptimError::MissingState(ref n) if n == "adamw.m.x"), "{err}");
        state.insert("adamw.m.x".to_string(), Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap());
        let err = read_state_tensor(&state, "adamw.m.x", &p).unwrap_err();
        assert!(err.to_string().contains("[3, 2]") && err.to_string().contains("[2, 3]"), "{err}");
        state.insert("adamw.m.x".to_string(), Tensor::ones((2, 3), DType::BF16, &Device::Cpu).unwrap());
        let t = read_state_tensor(&state, "adamw.m.x", &p).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.sum_all().unwrap().to_scalar::<f32>().unwrap(), 6.0);
    }
}
