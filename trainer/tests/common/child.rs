//! The real `trainer` binary as a child process, for signal and lock tests
//! ([`mamba_shards::testing::Running`], shared with the pipeline's tests).

use std::process::Command;

#[allow(unused_imports)] // not every test binary runs the trainer as a process
pub use mamba_shards::testing::Running;

pub fn trainer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.env("RUST_LOG", "info");
    c
}
