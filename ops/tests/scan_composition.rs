//! The selective scan written with ordinary candle tensor ops, one time step at a time (slow, so
//! only here), compared with the custom op: an independent check of both the forward and the
//! gradients candle's own autograd derives.

mod common;

use candle_core::{DType, Result, Tensor, Var};
use common::scan::{field_mut, grad_field, inputs, run_op, shapes, upstream, FIELDS};
use common::{assert_close, flat, grad, var, weighted_sum};

/// Mamba's recurrence from candle ops: `h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t`,
/// `y_t = C_t h_t + D u_t`, `out = y * silu(z)`. Shapes as in `mamba_ops::selective_scan`.
#[allow(clippy::too_many_arguments)]
fn scan_by_candle_ops(
    u: &Tensor,
    delta: &Tensor,
    a_log: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d_skip: &Tensor,
    z: &Tensor,
    delta_bias: &Tensor,
) -> Result<Tensor> {
    let (bs, l, d) = u.dims3()?;
    let n = a_log.dim(1)?;
    let a = a_log.exp()?.neg()?.unsqueeze(0)?; // (1, d, n)
    let dt = (delta.broadcast_add(delta_bias)?.exp()? + 1.0)?.log()?; // (b, l, d) softplus
    let mut h = Tensor::zeros((bs, d, n), u.dtype(), u.device())?;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let dt_t = dt.narrow(1, t, 1)?.squeeze(1)?; // (b, d)
        let u_t = u.narrow(1, t, 1)?.squeeze(1)?; // (b, d)
        let b_t = b.narrow(1, t, 1)?; // (b, 1, n)
        let c_t = c.narrow(1, t, 1)?; // (b, 1, n)
        let decay = dt_t.unsqueeze(2)?.broadcast_mul(&a)?.exp()?; // (b, d, n)
        let input = (dt_t * u_t)?.unsqueeze(2)?.broadcast_mul(&b_t)?; // (b, d, n)
        h = ((decay * &h)? + input)?;
        ys.push(h.broadcast_mul(&c_t)?.sum(2)?); // (b, d)
    }
    let y = (Tensor::stack(&ys, 1)? + u.broadcast_mul(d_skip)?)?; // (b, l, d)
    y * z.silu()?
}

#[test]
fn custom_op_matches_candle_composition() -> Result<()> {
    for (b, l, d, n, seed, dtype, fwd_bound, grad_bound) in [
        (2, 6, 5, 3, 1, DType::F64, 1e-12, 1e-10),
        (1, 9, 34, 4, 2, DType::F64, 1e-12, 1e-10),
        (2, 6, 5, 3, 1, DType::F32, 2e-6, 1e-5),
    ] {
        let x = inputs(b, l, d, n, seed);
        let g = upstream(&x, seed);
        let (want_out, want) = run_op(&x, &g, dtype)?;
        let sh = shapes(&x);
        let mut xc = x.clone();
        let vars = (0..8).map(|f| var(field_mut(&mut xc, f), &sh[f], dtype)).collect::<Result<Vec<Var>>>()?;
        let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let out = scan_by_candle_ops(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])?;
        let what = format!("{dtype:?} {b}x{l}x{d}x{n}");
        assert_close(&format!("{what} forward"), &flat(&out)?, &want_out, fwd_bound);
        let grads = weighted_sum(&out, &g)?.backward()?;
        for f in 0..8 {
            let got = grad(&grads, t[f], FIELDS[f])?;
            assert_close(&format!("{what} d{}", FIELDS[f]), &got, grad_field(&want, f), grad_bound);
        }
    }
    Ok(())
}
