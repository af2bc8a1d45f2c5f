//! Argument shape checks shared by the ops' public wrappers; the errors name the op, the
//! argument and both shapes.

use candle_core::{bail, Result, Tensor};

/// `t` must have exactly the dims `want`.
pub(crate) fn expect_shape(op: &str, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        bail!("{op}: `{name}` must have shape {want:?}, got {:?}", t.dims())
    }
    Ok(())
}

/// The state size `n` of `a_log: (d, n)`, which must have `d` rows.
pub(crate) fn state_size(op: &str, a_log: &Tensor, d: usize) -> Result<usize> {
    match a_log.dims() {
        &[ad, n] if ad == d => Ok(n),
        other => bail!("{op}: `a_log` must be (channels={d}, state), got shape {other:?}"),
    }
}
