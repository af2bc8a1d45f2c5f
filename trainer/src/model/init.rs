//! Parameter initialisation exactly as mamba_ssm does it, drawn from a seeded CPU RNG so that CPU
//! and GPU runs start from identical weights (the tensors move to the device afterwards).
//!
//! - `Mamba.__init__` (mamba_ssm/modules/mamba_simple.py): dt_proj.weight ~ U(±dt_rank^-0.5);
//!   dt ~ exp(U(log dt_min, log dt_max)) floored at dt_init_floor, dt_proj.bias = dt + log(-expm1(-dt))
//!   (inverse softplus); A_log[c, n] = log(n + 1); D = 1.
//! - PyTorch defaults for `nn.Linear` / `nn.Conv1d` (`kaiming_uniform_(a=√5)`): U(±1/√fan_in);
//!   conv1d bias U(±1/√fan_in) with fan_in = d_conv (depthwise).
//! - `_init_weights` (mamba_ssm/models/mixer_seq_simple.py): embedding ~ N(0, initializer_range);
//!   `rescale_prenorm_residual`: out_proj.weight /= √(n_residuals_per_layer · n_layer), with
//!   n_residuals_per_layer = 1 for Mamba blocks.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::MambaConfig;

/// Fresh weights for `cfg`, in model order, as f32 CPU tensors.
pub fn init_params(cfg: &MambaConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (name, shape) in cfg.param_shapes() {
        let numel: usize = shape.iter().product();
        let kind = name.rsplit_once("backbone.").map(|(_, s)| s).unwrap_or(&name);
        let values: Vec<f32> = if kind == "embeddings.weight" {
            normal(&mut rng, numel, cfg.initializer_range)?
        } else if kind.ends_with("norm.weight") || kind == "norm_f.weight" || kind.ends_with("mixer.D") {
            vec![1.0; numel]
        } else if kind.ends_with("mixer.A_log") {
            // (d_inner, d_state): every channel gets log(1), log(2), ..., log(N).
            let n = shape[1];
            (0..numel).map(|i| ((i % n + 1) as f32).ln()).collect()
        } else if kind.ends_with("mixer.dt_proj.weight") {
            let std = (cfg.dt_rank() as f64).powf(-0.5);
            uniform(&mut rng, numel, std)
        } else if kind.ends_with("mixer.dt_proj.bias") {
            (0..numel).map(|_| inverse_softplus_dt(&mut rng, cfg)).collect()
        } else if kind.ends_with("mixer.conv1d.weight") || kind.ends_with("mixer.conv1d.bias") {
            uniform(&mut rng, numel, 1.0 / (cfg.d_conv as f64).sqrt())
        } else if kind.ends_with("mixer.out_proj.weight") {
            let fan_in = shape[1] as f64;
            let rescale = (cfg.n_layer as f64).sqrt();
            uniform(&mut rng, numel, 1.0 / fan_in.sqrt()).into_iter().map(|v| (v as f64 / rescale) as f32).collect()
        } else if kind.ends_with("mixer.in_proj.weight") || kind.ends_with("mixer.x_proj.weight") {
            uniform(&mut rng, numel, 1.0 / (shape[1] as f64).sqrt())
        } else {
            candle_core::bail!("init: no rule for parameter {name}")
        };
        out.push((name, Tensor::from_vec(values, shape, &Device::Cpu)?));
    }
    Ok(out)
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-bound..bound) as f32).collect()
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Result<Vec<f32>> {
    let dist = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
    Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
}

/// One dt_proj bias entry: softplus⁻¹(dt), dt log-uniform in [dt_min, dt_max], floored.
fn inverse_softplus_dt(rng: &mut ChaCha8Rng, cfg: &MambaConfig) -> f32 {
    let (lo, hi) = (cfg.dt_min.ln(), cfg.dt_max.ln());
    let dt = (rng.gen::<f64>() * (hi - lo) + lo).exp().max(cfg.dt_init_floor);
    // softplus(y) = dt  ⇔  y = dt + log(1 - exp(-dt)) = dt + log(-expm1(-dt))
    (dt + (-(-dt).exp_m1()).ln()) as f32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stats(t: &Tensor) -> (f64, f64, f64, f64) {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let min = v.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        (mean, var.sqrt(), min, max)
    }

    #[test]
    fn init_statistics_follow_mamba_ssm() {
        let cfg = MambaConfig { n_layer: 4, ..MambaConfig::preset("tiny").unwrap() };
        let params = init_params(&cfg, 7).unwrap();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let (m, s, _, _) = stats(&get("backbone.embeddings.weight"));
        assert!(m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3, "embedding mean {m} std {s}");
        let a = get("backbone.layers.1.mixer.A_log").to_vec2::<f32>().unwrap();
        assert!(a.iter().all(|row| row.iter().enumerate().all(|(i, &v)| (v - ((i + 1) as f32).ln()).abs() < 1e-6)));
        assert_eq!(stats(&get("backbone.layers.0.mixer.D")), (1.0, 0.0, 1.0, 1.0));
        // softplus(bias) must land in [dt_min, dt_max].
        let bias: Vec<f32> = get("backbone.layers.0.mixer.dt_proj.bias").to_vec1().unwrap();
        for b in bias {
            let dt = (1.0 + (b as f64).exp()).ln();
            assert!((1e-3 * 0.999..=1e-1 * 1.001).contains(&dt), "dt {dt}");
        }
        let bound = 1.0 / (cfg.d_model as f64).sqrt();
        let (_, s, lo, hi) = stats(&get("backbone.layers.0.mixer.in_proj.weight"));
        assert!(lo >= -bound && hi <= bound && (s - bound / 3f64.sqrt()).abs() < 0.05 * bound, "in_proj std {s}");
        let out_bound = 1.0 / ((cfg.d_inner() as f64).sqrt() * (cfg.n_layer as f64).sqrt());
        let (_, s, lo, hi) = stats(&get("backbone.layers.0.mixer.out_proj.weight"));
        assert!(
            lo >= -out_bound && hi <= out_bound && (s - out_bound / 3f64.sqrt()).abs() < 0.05 * out_bound,
            "out_proj std {s}"
        );
        let w = 1.0 / (cfg.dt_rank() as f64).sqrt();
        let (_, _, lo, hi) = stats(&get("backbone.layers.0.mixer.dt_proj.weight"));
        assert!(lo >= -w && hi <= w && hi > 0.9 * w);
        let (_, _, lo, hi) = stats(&get("backbone.layers.0.mixer.conv1d.bias"));
        assert!(lo >= -0.5 && hi <= 0.5);
    }

    #[test]
    fn init_is_deterministic_in_the_seed() {
        let cfg = MambaConfig::preset("micro").unwrap();
        let a = init_params(&cfg, 1).unwrap();
        let b = init_params(&cfg, 1).unwrap();
        let c = init_params(&cfg, 2).unwrap();
        let flat = |p: &[(String, Tensor)]| p[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
    }
}
