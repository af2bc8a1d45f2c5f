//! `--micro-batch auto`: the largest micro-batch that divides a rank's share of the batch and whose
//! training step fits the device's free memory, from a written-down estimate of what a step
//! holds ([`StepMemory::estimate`]). Pure: the caller (`train::batch_plan`) measures the free
//! memory and chooses the cap.
//!
//! The estimate is of the hand-written training path (`model::mamba`, `model::mixer_train`,
//! `model::backward`, `model::head_loss`, `train::step`) and errs high. Against `trainer bench` on
//! one H200 (130m, bf16, seq 1024, docs/benchmarks.md, tenth round; peaks from nvidia-smi, CUDA
//! context included), when the step still held the whole logits: micro-batch 16 measured
//! 15.0 GiB, estimated 16.0 GiB; 32 measured 27.9 GiB, estimated 29.1 GiB. With the head's row
//! blocks and Δ recomputed in the backward the estimate at 16 is 12.5 GiB, measured 11.6 GiB on an
//! H100 (15th session).

use candle_core::DType;

use super::batch::BatchSplit;
use crate::model::head_loss::BLOCK_LOGITS;
use crate::model::MambaConfig;

/// At most this many tokens per micro-batch on a GPU: past it throughput hardly grows while
/// memory does (130m bf16 on an H200: 16 × 1024 tokens 214k tokens/s, 32 × 1024 236k; the
/// 130m's logits of 64k tokens alone take 6.6 GB in bf16).
pub const GPU_MAX_MICRO_TOKENS: usize = 65_536;
/// At most this many sequences per micro-batch on the CPU, where memory is rarely the limit: one
/// sequence per micro-batch was about 8–10% slower than 2 to 16, which were within noise of each
/// other (`tiny`, seq 256, batch 32, on the 2-core development VM; docs/benchmarks.md,
/// "Micro-batch on the CPU").
pub const CPU_MAX_MICRO_BATCH: usize = 8;
/// The free memory a plan leaves unused: a tenth of it, and at least this (CUDA context and
/// cuBLAS workspace growth, the allocator's fragmentation, the host running one micro-batch ahead).
pub const MIN_MARGIN_BYTES: u64 = 1 << 30;

/// The bytes a device holds during a training step: `fixed` whatever the micro-batch, plus
/// `per_sequence` for every sequence of the micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepMemory {
    pub fixed: u64,
    pub per_sequence: u64,
}

impl StepMemory {
    /// The estimate for `model` at `seq_len` tokens per sequence, matmuls and activations in
    /// `dtype` (f32, or bf16 = mixed precision). Per parameter (N of them), fixed:
    /// - 4 bytes: the f32 parameters (the optimizer's master copy);
    /// - bf16 only, 2: the matmul weights cast once per step (`MambaLM::compute_weights`);
    /// - 8: the step's f32 gradient sum and the current micro-batch's f32 gradients
    ///   (`train::step::accumulate`), bf16 only + 2: the bf16 weight gradients before
    ///   `cast_many` converts them;
    /// - 8: the optimizer state, AdamW's m and v (Muon keeps 4, its momentum: 8 bounds both).
    ///
    /// Per token, in the compute dtype's c bytes unless said (d = d_model, di = d_inner,
    /// r = dt_rank, n = d_state, V = the padded vocabulary), what the forward saves per layer
    /// (`BlockActs`, `MixerActs`):
    /// - the block's input, f32: 4·d; the mixer's input x: c·d;
    /// - in_proj's output xz: 2·di, the conv's output xs: di, x_proj's output x_dbl: r + 2n,
    ///   its copy dt_low: r, the scan's output y: di (all c bytes; Δ is recomputed in the
    ///   backward, `model::mixer_train`);
    /// - the scan's saved states (GPU: every 16th step's, f32): 4·di·n/16, and its packed B, C: 4·2n;
    ///
    /// and once: the final norm's input (f32) and output, and the head's gradient for that
    /// output: (4 + 2c)·d, the per-row loss, ids and targets: 16; one layer's backward
    /// temporaries (the recomputed Δ, dy, dxz, dxs, …): c·7·di. The logits are never whole
    /// (`model::head_loss`): one block's logits and their gradient, 2·c·`BLOCK_LOGITS`, and the
    /// head's f32 gradient sum over the blocks, 4·V·d, are fixed.
    pub fn estimate(model: &MambaConfig, seq_len: usize, dtype: DType) -> StepMemory {
        let n_params = model.n_params() as u64;
        let c = dtype.size_in_bytes() as u64;
        let half = c < 4;
        let per_param = n_params * (4 + if half { 2 } else { 0 } + 8 + if half { 2 } else { 0 } + 8);
        let (d, di, r, n, v) = (
            model.d_model as u64,
            model.d_inner() as u64,
            model.dt_rank() as u64,
            model.d_state as u64,
            model.padded_vocab() as u64,
        );
        let layer = 4 * d + c * (d + 2 * di + di + (r + 2 * n) + r + di) + 4 * di * n / 16 + 4 * 2 * n;
        let once = (4 + 2 * c) * d + 16 + c * 7 * di;
        let per_token = model.n_layer as u64 * layer + once;
        let fixed = per_param + 2 * c * BLOCK_LOGITS as u64 + 4 * v * d;
        StepMemory { fixed, per_sequence: per_token * seq_len as u64 }
    }

    /// The estimate for a micro-batch of `micro_batch` sequences.
    pub fn total(&self, micro_batch: usize) -> u64 {
        self.fixed.saturating_add(self.per_sequence.saturating_mul(micro_batch as u64))
    }
}

/// What [`plan_micro_batch`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatchPlan {
    pub split: BatchSplit,
    /// The estimated bytes of a step at that micro-batch.
    pub needed: u64,
    /// The free memory the plan was given.
    pub free: u64,
    /// What it may use of it: `free` less the margin ([`usable_bytes`]).
    pub usable: u64,
    /// `needed ≤ usable`; false only at micro-batch 1, when even one sequence is estimated not
    /// to fit (then the run tries anyway and may run out of memory).
    pub fits: bool,
}

/// `free` less a tenth of it, and less at least [`MIN_MARGIN_BYTES`].
pub fn usable_bytes(free: u64) -> u64 {
    free.saturating_sub((free / 10).max(MIN_MARGIN_BYTES))
}

/// The largest micro-batch that divides `per_device` (a rank's sequences per step), is at most
/// `max_micro_batch` and whose step is estimated to fit in [`usable_bytes`]`(free)`; micro-batch 1
/// when none fits.
pub fn plan_micro_batch(
    free: u64,
    model: &MambaConfig,
    seq_len: usize,
    dtype: DType,
    per_device: usize,
    max_micro_batch: usize,
) -> MicroBatchPlan {
    let memory = StepMemory::estimate(model, seq_len, dtype);
    let usable = usable_bytes(free);
    let cap = max_micro_batch.clamp(1, per_device.max(1));
    let micro_batch = (1..=cap).rev().find(|&m| per_device.is_multiple_of(m) && memory.total(m) <= usable).unwrap_or(1);
    let needed = memory.total(micro_batch);
    let split = BatchSplit { micro_batch, grad_accum: per_device.max(1) / micro_batch };
    MicroBatchPlan { split, needed, free, usable, fits: needed <= usable }
}

/// The GPU cap: [`GPU_MAX_MICRO_TOKENS`] ÷ `seq_len` sequences, at least 1.
pub fn gpu_max_micro_batch(seq_len: usize) -> usize {
    (GPU_MAX_MICRO_TOKENS / seq_len.max(1)).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn m130() -> MambaConfig {
        MambaConfig::preset("130m").unwrap()
    }

    #[test]
    fn the_estimate_errs_high_but_close_to_the_measured_peaks() {
        // docs/benchmarks.md, tenth round: 130m bf16 seq 1024 on an H200, nvidia-smi peaks. Those
        // runs held the whole logits and their gradient (2 · 2 bytes · V per token) instead of
        // one block's and the head's f32 gradient sum, and every layer's Δ (2 bytes · di per
        // token and layer) instead of one: with those terms swapped back, the estimate must
        // bracket them as before.
        let m = StepMemory::estimate(&m130(), 1024, DType::BF16);
        let (v, d, di) = (m130().padded_vocab() as u64, m130().d_model as u64, m130().d_inner() as u64);
        let blocks = 2 * 2 * BLOCK_LOGITS as u64 + 4 * v * d;
        let deltas = |micro: u64| 2 * di * 1024 * micro * (m130().n_layer as u64 - 1);
        let gib = |b: u64| b as f64 / GIB as f64;
        for (micro, measured) in [(8, 8.6), (16, 15.0), (32, 27.9)] {
            let before = m.total(micro) - blocks + 2 * 2 * v * 1024 * micro as u64 + deltas(micro as u64);
            let est = gib(before);
            assert!(est >= measured && est <= measured * 1.2, "micro-batch {micro}: {est:.1} GiB vs {measured}");
        }
        // Blocked and without the saved Δ, micro-batch 16 needs 3.5 GiB less than before.
        assert!((gib(m.total(16)) - 12.5).abs() < 0.05, "{:.2} GiB", gib(m.total(16)));
        // docs/benchmarks.md, 15th session, on an H100: micro-batch 16 measured 13,007 MiB with
        // the blocks but every layer's Δ, and 11,855 MiB with neither.
        for (est, measured_mib) in [(m.total(16) + deltas(16), 13_007.0), (m.total(16), 11_855.0)] {
            let (est, measured) = (gib(est), measured_mib / 1024.0);
            assert!(est >= measured && est <= measured * 1.2, "micro-batch 16: {est:.2} GiB vs {measured:.2}");
        }
        // f32 activations take twice the bytes; the fixed part drops the bf16 copies (4 bytes
        // per parameter) and holds an f32 logits block (4 · BLOCK_LOGITS bytes more).
        let f = StepMemory::estimate(&m130(), 1024, DType::F32);
        let n = m130().n_params() as u64;
        assert!(f.per_sequence > m.per_sequence * 3 / 2, "{f:?} vs {m:?}");
        assert_eq!(f.fixed + 4 * n, m.fixed + 4 * BLOCK_LOGITS as u64, "{f:?} vs {m:?}");
    }

    #[test]
    fn an_80_gib_gpu_takes_the_130m_batch_of_32_in_one_or_two_micro_batches() {
        let p = plan_micro_batch(80 * GIB, &m130(), 1024, DType::BF16, 32, gpu_max_micro_batch(1024));
        assert_eq!(p.split, BatchSplit { micro_batch: 32, grad_accum: 1 });
        assert!(p.fits && p.needed < p.usable && p.usable == 72 * GIB, "{p:?}");
        // A 24 GiB card: 16 × 2.
        let p = plan_micro_batch(23 * GIB, &m130(), 1024, DType::BF16, 32, gpu_max_micro_batch(1024));
        assert_eq!(p.split, BatchSplit { micro_batch: 16, grad_accum: 2 });
    }

    #[test]
    fn little_memory_picks_one_and_says_it_may_not_fit() {
        let p = plan_micro_batch(2 * GIB, &m130(), 1024, DType::BF16, 32, 64);
        assert_eq!(p.split, BatchSplit { micro_batch: 1, grad_accum: 32 });
        assert!(!p.fits, "{p:?}");
        let p = plan_micro_batch(0, &m130(), 1024, DType::BF16, 32, 64);
        assert_eq!((p.split.micro_batch, p.usable, p.fits), (1, 0, false));
    }

    #[test]
    fn the_micro_batch_divides_the_batch_and_respects_the_cap() {
        // Room for about 20 sequences: of 24's divisors, 12.
        let m = StepMemory::estimate(&m130(), 1024, DType::BF16);
        let free = (m.total(20) as f64 / 0.9) as u64 + 1;
        let p = plan_micro_batch(free, &m130(), 1024, DType::BF16, 24, 64);
        assert_eq!(p.split, BatchSplit { micro_batch: 12, grad_accum: 2 });
        // A prime batch: all or one.
        let p = plan_micro_batch(free, &m130(), 1024, DType::BF16, 23, 64);
        assert_eq!(p.split, BatchSplit { micro_batch: 1, grad_accum: 23 });
        // A big batch on a big card stops at the cap: 64 × 1024 tokens.
        let p = plan_micro_batch(140 * GIB, &m130(), 1024, DType::BF16, 256, gpu_max_micro_batch(1024));
        assert_eq!(p.split, BatchSplit { micro_batch: 64, grad_accum: 4 });
        assert_eq!(gpu_max_micro_batch(1 << 20), 1);
    }
}
