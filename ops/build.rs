//! With the `cuda` feature, compiles `kernels/*.cu` to PTX for `CUDA_COMPUTE_CAP` (default 90,
//! Hopper) into OUT_DIR, where `src/cuda_util.rs` includes it. Without the feature: nothing.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 12] = [
    "cross_entropy",
    "rms_norm",
    "mixer_conv",
    "mixer_scan",
    "partials",
    "embedding",
    "muon",
    "residual",
    "sum_squares",
    "adamw",
    "multi_tensor",
    "pack",
];
/// Headers the kernels include (a change to one rebuilds them all).
const HEADERS: [&str; 5] =
    ["mixer_common.cuh", "lane_sums.cuh", "block_sum.cuh", "mixer_scan_bwd.cuh", "multi_tensor.cuh"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    for k in KERNELS {
        println!("cargo:rerun-if-changed=kernels/{k}.cu");
    }
    for h in HEADERS {
        println!("cargo:rerun-if-changed=kernels/{h}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set")));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    for k in KERNELS {
        let out = out_dir.join(format!("{k}.ptx"));
        let status = Command::new(&nvcc)
            // -lineinfo: source lines for profilers (ncu's source view); no effect on the code.
            .args(["-ptx", "-O3", "-lineinfo", &format!("-arch=sm_{cap}"), "-o"])
            .arg(&out)
            .arg(format!("kernels/{k}.cu"))
            .status()
            .unwrap_or_else(|e| {
                fail(&format!("could not run `{nvcc}` ({e}); source ../shared/cuda/setup-toolchain.sh or set NVCC"))
            });
        if !status.success() {
            fail(&format!("`{nvcc}` failed on kernels/{k}.cu ({status})"));
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("ops/build.rs: {msg}");
    std::process::exit(1);
}
