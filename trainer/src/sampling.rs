//! Next-token sampling: temperature, then top-k, then top-p (nucleus), from a seeded RNG.
//! Temperature 0 means greedy (argmax).

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 = greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 = no limit.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 = no limit.
    pub top_p: f64,
}

/// Draws one token id from `logits` (one per candidate token).
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
            as u32
    };
    if s.temperature <= 0.0 || logits.len() <= 1 {
        return argmax();
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i, ((v as f64 - max) / s.temperature).exp())).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if s.top_k > 0 {
        probs.truncate(s.top_k);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if s.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            cum += p.1 / total;
            if cum >= s.top_p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax();
    }
    let mut r = rng.gen::<f64>() * total;
    for (i, p) in &probs {
        r -= p;
        if r <= 0.0 {
            return *i as u32;
        }
    }
    probs[probs.len() - 1].0 as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn greedy_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 2.9, -1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
        assert_eq!(sample(&logits, &greedy, &mut rng), 1);
        // top-k 2 only ever yields the two best tokens.
        let k2 = Sampling { temperature: 1.0, top_k: 2, top_p: 1.0 };
        let seen: std::collections::BTreeSet<u32> = (0..500).map(|_| sample(&logits, &k2, &mut rng)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2]);
        // A tiny top-p keeps only the best token.
        let p = Sampling { temperature: 1.0, top_k: 0, top_p: 0.01 };
        assert!((0..100).all(|_| sample(&logits, &p, &mut rng) == 1));
        // Plain sampling reaches every token, roughly in proportion.
        let all = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[sample(&logits, &all, &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = (logits[i] as f64).exp() / z;
            assert!((c as f64 / 20000.0 - want).abs() < 0.015, "token {i}: {c} vs {want}");
        }
    }
}
