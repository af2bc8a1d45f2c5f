//! Data-parallel training through NCCL on real GPUs: the checks for a GPU session (there is no
//! GPU in CI, so they are ignored and only compiled with `--features nccl`). Run on a host with at
//! least 2 GPUs:
//! `cargo test --release --features nccl -p mamba-trainer --test data_parallel_gpu -- --ignored --nocapture`
#![cfg(feature = "nccl")]
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Tensor};
use common::*;
use mamba_trainer::checkpoint::{latest_checkpoint, load_model};
use mamba_trainer::config::TrainConfig;
use mamba_trainer::device::cuda_rank_device;
use mamba_trainer::parallel::nccl::{NcclComm, NcclId};
use mamba_trainer::parallel::Comm;
use mamba_trainer::train::run;

#[test]
#[ignore = "needs 2 GPUs and a build with --features nccl"]
fn nccl_all_reduce_and_all_gather_on_two_gpus() {
    mamba_trainer::parallel::devices::nvls_default();
    let id = NcclId::new().unwrap();
    let handles: Vec<_> = (0..2usize)
        .map(|rank| {
            std::thread::spawn(move || {
                let device = cuda_rank_device(rank).unwrap();
                let comm = NcclComm::connect(rank, 2, id, &device).unwrap();
                let r = rank as f32;
                let mut out = Vec::new();
                for dtype in [DType::F32, DType::BF16, DType::F64] {
                    let t = Tensor::new(&[[1f32 + r, 10.0 * r], [3.0, -r]], &device).unwrap().to_dtype(dtype).unwrap();
                    let s = comm.all_reduce_sum(&t).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
                    let g = comm.all_gather(&t).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
                    out.push((s, g));
                }
                out
            })
        })
        .collect();
    for h in handles {
        for (s, g) in h.join().unwrap() {
            assert_eq!(s, vec![vec![3.0, 10.0], vec![6.0, -1.0]]);
            assert_eq!(g, vec![vec![1.0, 0.0], vec![3.0, 0.0], vec![2.0, 10.0], vec![3.0, -1.0]]);
        }
    }
}

#[test]
#[ignore = "needs 2 GPUs and a build with --features nccl"]
fn two_gpus_train_like_one_gpu_with_the_same_effective_batch() {
    init_tracing();
    let data = micro_shards();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let base = |out: &std::path::Path| TrainConfig { steps: 5, ..tiny_config(data.path(), out, "micro") };
    let a = run(&TrainConfig { device: "cuda:0".into(), grad_accum: Some(2), ..base(one.path()) }, &no_stop()).unwrap();
    let b =
        run(&TrainConfig { devices: Some("0,1".into()), grad_accum: Some(1), ..base(two.path()) }, &no_stop()).unwrap();
    println!("1 GPU:  {:?}\n2 GPUs: {:?}", a.losses, b.losses);
    for (x, y) in a.losses.iter().zip(&b.losses) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "{:?} vs {:?}", a.losses, b.losses);
    }
    let (x, y) = (
        load_model(&latest_checkpoint(one.path()).unwrap().unwrap()).unwrap(),
        load_model(&latest_checkpoint(two.path()).unwrap().unwrap()).unwrap(),
    );
    for (name, t) in &x.tensors {
        let gap = (t - &y.tensors[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(gap < 1e-4, "{name}: {gap}");
    }
}
