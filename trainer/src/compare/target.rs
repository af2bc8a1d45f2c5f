//! Tokens to reach a target validation loss.
//!
//! The target is the best (lowest) final val loss among the baseline runs (AdamW-only by
//! default). The baseline run that set it reaches it at its final eval, so its final eval's
//! tokens are the reference: a run's ratio is (its tokens to the target) / (those tokens).
//!
//! A run's tokens to the target come from its first crossing: the first eval whose loss is at or
//! below the target, linearly interpolated in tokens with the eval before it. When the first
//! eval is already at or below the target there is nothing before it to interpolate with, so
//! its own tokens are reported (an upper bound). Evals are taken in the order logged, which is
//! step order.

/// The loss to reach and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub loss: f64,
    /// Label of the baseline run with the best final val loss.
    pub baseline: String,
    /// That run's final eval tokens: the denominator of every ratio.
    pub baseline_tokens: u64,
}

/// A baseline candidate: (label, final val loss, final eval tokens).
pub type BaselineFinal<'a> = (&'a str, f64, u64);

/// The best final val loss among `baselines` (the first one on a tie); `None` when there is no
/// baseline with a finite loss.
pub fn pick_target(baselines: &[BaselineFinal]) -> Option<Target> {
    let mut best: Option<&BaselineFinal> = None;
    for b in baselines.iter().filter(|b| b.1.is_finite()) {
        if best.is_none_or(|x| b.1 < x.1) {
            best = Some(b);
        }
    }
    best.map(|&(label, loss, tokens)| Target { loss, baseline: label.to_string(), baseline_tokens: tokens })
}

/// Tokens at which `curve` ((tokens, loss) per eval, in step order) first reaches `target`, by
/// linear interpolation between the two evals that bracket the crossing; `None` if it never does.
pub fn tokens_to_reach(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let i = curve.iter().position(|&(_, loss)| loss <= target)?;
    if i == 0 {
        return Some(curve[0].0);
    }
    let ((t0, l0), (t1, l1)) = (curve[i - 1], curve[i]);
    // l0 > target >= l1, so l0 - l1 > 0 and the fraction lies in (0, 1].
    let frac = (l0 - target) / (l0 - l1);
    Some(t0 + frac * (t1 - t0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_between_the_bracketing_evals() {
        // 4.0 at 1000 tokens, 3.0 at 3000: 3.5 is half-way, at 2000 tokens.
        let curve = [(0.0, 5.0), (1000.0, 4.0), (3000.0, 3.0), (4000.0, 2.5)];
        assert_eq!(tokens_to_reach(&curve, 3.5), Some(2000.0));
        // 3.75: a quarter of the way from 4.0 to 3.0 → 1000 + 0.25 × 2000.
        assert_eq!(tokens_to_reach(&curve, 3.75), Some(1500.0));
        // Exactly on an eval: that eval's tokens.
        assert_eq!(tokens_to_reach(&curve, 3.0), Some(3000.0));
        assert_eq!(tokens_to_reach(&curve, 2.5), Some(4000.0));
    }

    #[test]
    fn takes_the_first_crossing_of_a_non_monotone_curve() {
        // Reaches 3.0 at 2000 tokens, goes back up, reaches it again later: the first counts.
        let curve = [(1000.0, 4.0), (2000.0, 3.0), (3000.0, 3.5), (4000.0, 2.0)];
        assert_eq!(tokens_to_reach(&curve, 3.0), Some(2000.0));
        // 3.2 is crossed between 1000 (4.0) and 2000 (3.0): 1000 + 0.8 × 1000.
        let t = tokens_to_reach(&curve, 3.2).unwrap();
        assert!((t - 1800.0).abs() < 1e-9, "{t}");
    }

    #[test]
    fn never_reached_and_reached_at_the_first_eval() {
        let curve = [(1000.0, 4.0), (2000.0, 3.5)];
        assert_eq!(tokens_to_reach(&curve, 3.4), None);
        assert_eq!(tokens_to_reach(&[], 3.4), None);
        assert_eq!(tokens_to_reach(&curve, 4.5), Some(1000.0));
    }

    #[test]
    fn target_is_the_best_baseline_final_loss() {
        let b = [("adamw-3e-4", 3.9, 5000), ("adamw-1e-3", 3.6, 6000), ("adamw-3e-3", 3.7, 6000)];
        let t = pick_target(&b).unwrap();
        assert_eq!(t, Target { loss: 3.6, baseline: "adamw-1e-3".into(), baseline_tokens: 6000 });
        // A tie keeps the first; NaN (diverged) baselines are ignored; none → no target.
        assert_eq!(pick_target(&[("a", 3.0, 1), ("b", 3.0, 2)]).unwrap().baseline, "a");
        assert_eq!(pick_target(&[("a", f64::NAN, 1), ("b", 3.3, 2)]).unwrap().baseline, "b");
        assert_eq!(pick_target(&[]), None);
    }
}
