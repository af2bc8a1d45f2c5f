//! The result of `trainer eval`: one human line, or one JSON object (`--json`).

use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Mean next-token cross-entropy (nats) over every target token of every chunk.
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Target tokens scored: chunks × seq_len.
    pub tokens: u64,
    pub chunks: u64,
    /// Tokens per sequence (chunks hold seq_len + 1).
    pub seq_len: usize,
    /// Compute dtype (`f32` or `bf16`).
    pub dtype: String,
    /// The checkpoint's optimizer step, when its `trainer_state.json` says.
    pub step: Option<u64>,
    /// The checkpoint directory evaluated (a run directory resolved to its newest checkpoint).
    pub checkpoint: PathBuf,
    /// `--data` as given.
    pub data: PathBuf,
    /// The split of a shard directory (`val` or `train`); null for a shard file.
    pub split: Option<String>,
}

impl EvalReport {
    /// `eval: loss 4.1234  ppl 61.8  over 123 chunks (125,952 tokens) of data/mini`
    pub fn human_line(&self) -> String {
        format!(
            "eval: loss {:.4}  ppl {:.1}  over {} chunks ({} tokens) of {}",
            self.loss,
            self.perplexity,
            thousands(self.chunks),
            thousands(self.tokens),
            self.data.display()
        )
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// 125829 → "125,829".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    // Groups of three digits from the right; the digits are ASCII, so every group is UTF-8.
    let groups: Vec<&str> = digits.as_bytes().rchunks(3).rev().map(|g| std::str::from_utf8(g).unwrap_or("?")).collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(125829), "125,829");
        assert_eq!(thousands(1234567890), "1,234,567,890");
    }

    #[test]
    fn human_line_and_json() {
        let r = EvalReport {
            loss: 4.12344,
            perplexity: 4.12344f64.exp(),
            tokens: 125952,
            chunks: 123,
            seq_len: 1024,
            dtype: "f32".into(),
            step: Some(7),
            checkpoint: "runs/x/ckpt-000007".into(),
            data: "data/mini".into(),
            split: Some("val".into()),
        };
        assert_eq!(r.human_line(), "eval: loss 4.1234  ppl 61.8  over 123 chunks (125,952 tokens) of data/mini");
        let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(v["chunks"], 123);
        assert_eq!(v["step"], 7);
        assert_eq!(v["data"], "data/mini");
    }
}
