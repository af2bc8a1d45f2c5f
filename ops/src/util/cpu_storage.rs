//! Reading candle CPU storage as plain slices. The public wrappers make every input contiguous
//! before it reaches a kernel, so a non-contiguous layout here is a bug and is reported as one.

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor, WithDType};

/// The elements of a contiguous `layout` inside `storage`, as a slice of `T`.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    op: &str,
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: internal error: input `{what}` is not contiguous (layout {layout:?})")
    };
    let all = storage.as_slice::<T>()?;
    match all.get(start..end) {
        Some(s) => Ok(s),
        None => bail!(
            "{op}: internal error: input `{what}` layout {start}..{end} exceeds storage of {} elements",
            all.len()
        ),
    }
}

/// The CPU storage behind `tensor` (whose locked storage is `storage`), or a clear error naming
/// the op and input when it lives on another device.
pub(crate) fn as_cpu<'a>(op: &str, what: &str, tensor: &Tensor, storage: &'a Storage) -> Result<&'a CpuStorage> {
    match storage {
        Storage::Cpu(s) => Ok(s),
        _ => bail!("{op}: `{what}` is on {:?}, but only the CPU backward is implemented", tensor.device().location()),
    }
}
