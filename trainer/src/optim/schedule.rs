//! Learning-rate schedule: linear warmup, then cosine decay to a floor. The same multiplier is
//! applied to both optimizer groups (`lr = base_lr * lr_multiplier(step, ..)`).

/// The multiplier of the base learning rate at optimizer step `step` (0-based).
///
/// - Warmup, `step < warmup`: `(step + 1) / warmup`. Step 0 therefore gets `1/warmup` of the
///   peak, not 0 (a zero-lr step would waste a whole accumulated batch), and step `warmup - 1`
///   reaches the peak 1.0.
/// - Cosine, `warmup <= step < total`: from 1.0 at `step == warmup` down towards `final_frac`,
///   `final_frac + (1 - final_frac) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2`.
/// - `step >= total`: constant `final_frac` (training past the planned length keeps the floor).
///
/// `warmup == 0` starts at the peak. If `total <= warmup` there is no cosine phase: the warmup
/// runs to its end and then the floor applies.
pub fn lr_multiplier(step: usize, warmup: usize, total: usize, final_frac: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return final_frac;
    }
    // Here warmup <= step < total, so total - warmup >= 1.
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    final_frac + (1.0 - final_frac) * cosine
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn seed_schedule_values() {
        let (w, t, f) = (100, 10_000, 0.1);
        assert!(close(lr_multiplier(0, w, t, f), 0.01), "step 0 gets 1/warmup");
        assert!(close(lr_multiplier(49, w, t, f), 0.5));
        assert!(close(lr_multiplier(w - 1, w, t, f), 1.0));
        assert!(close(lr_multiplier(w, w, t, f), 1.0));
        // Middle of the cosine phase: halfway between peak and floor.
        let mid = w + (t - w) / 2;
        assert!(close(lr_multiplier(mid, w, t, f), 0.55), "{}", lr_multiplier(mid, w, t, f));
        // A quarter in: final + (1-final) * (1 + cos(pi/4))/2.
        let quarter = w + (t - w) / 4;
        let want = 0.1 + 0.9 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!(close(lr_multiplier(quarter, w, t, f), want));
        assert!(close(lr_multiplier(t, w, t, f), 0.1));
        assert!(close(lr_multiplier(t + 1, w, t, f), 0.1));
        assert!(close(lr_multiplier(10 * t, w, t, f), 0.1));
        // Just before the end it is barely above the floor.
        let last = lr_multiplier(t - 1, w, t, f);
        assert!(last > 0.1 && last < 0.1 + 1e-6, "{last}");
    }

    #[test]
    fn monotone_up_then_down() {
        let (w, t, f) = (10, 200, 0.2);
        for s in 1..w {
            assert!(lr_multiplier(s, w, t, f) > lr_multiplier(s - 1, w, t, f), "warmup {s}");
        }
        for s in w + 1..t {
            assert!(lr_multiplier(s, w, t, f) < lr_multiplier(s - 1, w, t, f), "decay {s}");
        }
    }

    #[test]
    fn edge_cases() {
        // No warmup: the peak from step 0.
        assert!(close(lr_multiplier(0, 0, 100, 0.1), 1.0));
        // total <= warmup: warmup, then the floor.
        assert!(close(lr_multiplier(4, 5, 5, 0.1), 1.0));
        assert!(close(lr_multiplier(5, 5, 5, 0.1), 0.1));
        // final_frac 1.0 is a constant schedule after warmup.
        assert!(close(lr_multiplier(50, 10, 100, 1.0), 1.0));
    }
}
