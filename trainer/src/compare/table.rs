//! The comparison as numbers: one [`RunSummary`] per run, rendered as a markdown table
//! (`summary.md`, also printed) and as JSON (`summary.json`, the same numbers unrounded).

use serde::Serialize;

use super::runs::Run;
use super::target::{tokens_to_reach, Target};

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub label: String,
    pub dir: String,
    pub optimizer: String,
    pub baseline: bool,
    pub muon_lr: f64,
    pub adamw_lr: f64,
    pub model: String,
    /// The shard directory it trained on.
    pub data: String,
    pub steps_done: u64,
    pub steps_configured: u64,
    /// Sequences per optimizer step over all ranks, and its split per device (`None`: unknown,
    /// e.g. `--micro-batch auto` of a run that never resolved it).
    pub batch_size: Option<u64>,
    pub micro_batch: Option<u64>,
    pub grad_accum: Option<u64>,
    pub seed: u64,
    pub git: Option<String>,
    pub tokens_trained: u64,
    pub final_val_loss: f64,
    pub best_val_loss: f64,
    /// Tokens to reach the target (`None`: never reached, or no target).
    pub tokens_to_target: Option<f64>,
    /// `tokens_to_target` / the baseline's final eval tokens.
    pub ratio_to_baseline: Option<f64>,
}

/// The whole comparison (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub title: String,
    pub target: Option<TargetJson>,
    pub runs: Vec<RunSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetJson {
    pub val_loss: f64,
    pub baseline: String,
    pub baseline_tokens: u64,
}

/// Summarises `runs` against `target`; `is_baseline` says which runs are baselines.
pub fn summarize(title: &str, runs: &[Run], is_baseline: &dyn Fn(&Run) -> bool, target: Option<&Target>) -> Summary {
    let rows = runs
        .iter()
        .map(|r| {
            let reached = target.and_then(|t| tokens_to_reach(&r.curve(), t.loss));
            let ratio =
                target.zip(reached).filter(|(t, _)| t.baseline_tokens > 0).map(|(t, n)| n / t.baseline_tokens as f64);
            RunSummary {
                label: r.label.clone(),
                dir: r.dir.display().to_string(),
                optimizer: r.config.optimizer.clone(),
                baseline: is_baseline(r),
                muon_lr: r.config.muon_lr,
                adamw_lr: r.config.adamw_lr,
                model: r.config.model.clone(),
                data: r.config.data.clone(),
                steps_done: r.last_step,
                steps_configured: r.config.steps,
                batch_size: r.config.batch_size,
                micro_batch: r.config.micro_batch,
                grad_accum: r.config.grad_accum,
                seed: r.config.seed,
                git: r.config.git.clone(),
                tokens_trained: r.tokens_trained,
                final_val_loss: r.final_val_loss(),
                best_val_loss: r.best_val_loss(),
                tokens_to_target: reached,
                ratio_to_baseline: ratio,
            }
        })
        .collect();
    let target = target.map(|t| TargetJson {
        val_loss: t.loss,
        baseline: t.baseline.clone(),
        baseline_tokens: t.baseline_tokens,
    });
    Summary { title: title.to_string(), target, runs: rows }
}

/// Token counts with three significant digits: 950, 12.3K, 5.24M, 1.20B.
pub fn human_tokens(n: f64) -> String {
    let (value, unit) = match n.abs() {
        x if x >= 1e9 => (n / 1e9, "B"),
        x if x >= 1e6 => (n / 1e6, "M"),
        x if x >= 1e3 => (n / 1e3, "K"),
        _ => return format!("{n:.0}"),
    };
    let decimals = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}{unit}")
}

/// `1e-3`, `5e-4`, `3.5e-4`: the shortest exact scientific form.
fn lr(x: f64) -> String {
    format!("{x:e}")
}

/// The "tokens to target" cell: `5.24M (0.61×)`, `not reached`, or empty without a target.
pub fn to_target_cell(row: &RunSummary, has_target: bool) -> String {
    match (has_target, row.tokens_to_target, row.ratio_to_baseline) {
        (false, _, _) => String::new(),
        (true, None, _) => "not reached".to_string(),
        (true, Some(n), Some(r)) => format!("{} ({r:.2}×)", human_tokens(n)),
        (true, Some(n), None) => human_tokens(n),
    }
}

/// The main table (one row per run), as printed and written into `summary.md`.
pub fn markdown_table(s: &Summary) -> String {
    let mut out = String::from("| run | optimizer | muon lr | adamw lr | model | steps | tokens trained | final val loss | best val loss | tokens to target |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &s.runs {
        let muon = if r.optimizer == "adamw" { "-".to_string() } else { lr(r.muon_lr) };
        let steps = if r.steps_done < r.steps_configured {
            format!("{}/{} (unfinished)", r.steps_done, r.steps_configured)
        } else {
            r.steps_done.to_string()
        };
        let name = if r.baseline { format!("{} (baseline)", r.label) } else { r.label.clone() };
        out.push_str(&format!(
            "| {name} | {} | {muon} | {} | {} | {steps} | {} | {:.4} | {:.4} | {} |\n",
            r.optimizer,
            lr(r.adamw_lr),
            r.model,
            human_tokens(r.tokens_trained as f64),
            r.final_val_loss,
            r.best_val_loss,
            to_target_cell(r, s.target.is_some())
        ));
    }
    out
}

/// One sentence on the target: what it is and how the last column was computed.
pub fn target_line(s: &Summary) -> String {
    match &s.target {
        Some(t) => format!(
            "Target: val loss {:.4}, the best final val loss among the baseline runs (`{}`, at its final eval after {} tokens). \
             \"tokens to target\": the first eval at or below the target, linearly interpolated in tokens with the eval before it; \
             the ratio divides by {}.",
            t.val_loss,
            t.baseline,
            human_tokens(t.baseline_tokens as f64),
            human_tokens(t.baseline_tokens as f64)
        ),
        None => "No baseline run (AdamW-only, or --baseline-prefix) among these runs: no target, so the \"tokens to target\" column is empty.".to_string(),
    }
}

/// `summary.md`: title, target sentence, main table, the settings that must match in a
/// controlled comparison (seed, batch layout, commit), and the charts.
pub fn summary_markdown(s: &Summary, command: &str, warnings: &[String]) -> String {
    let mut out = format!("# {}\n\nWritten by `{command}`.\n\n{}\n\n{}", s.title, target_line(s), markdown_table(s));
    for w in warnings {
        out.push_str(&format!("\n> warning: {w}\n"));
    }
    out.push_str("\n| run | data | seed | batch (micro batch × grad accum) | git | dir |\n|---|---|---|---|---|---|\n");
    for r in &s.runs {
        let git = r.git.as_deref().unwrap_or("?");
        let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "| {} | `{}` | {} | {} ({} × {}) | {git} | `{}` |\n",
            r.label,
            r.data,
            r.seed,
            n(r.batch_size),
            n(r.micro_batch),
            n(r.grad_accum),
            r.dir
        ));
    }
    out.push_str(&format!(
        "\n![validation loss vs tokens]({})\n\n![validation loss vs tokens, last 50%]({})\n",
        super::chart::FULL_PNG,
        super::chart::ZOOM_PNG
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_read_at_a_glance() {
        assert_eq!(human_tokens(950.0), "950");
        assert_eq!(human_tokens(12_345.0), "12.3K");
        assert_eq!(human_tokens(5_242_880.0), "5.24M");
        assert_eq!(human_tokens(524_288_000.0), "524M");
        assert_eq!(human_tokens(1.2e9), "1.20B");
        assert_eq!(lr(0.0003), "3e-4");
        assert_eq!(lr(0.001), "1e-3");
    }
}
