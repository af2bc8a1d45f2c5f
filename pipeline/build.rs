//! Records the git commit the binary was built from: `pipeline -V`, manifest.json and
//! pipeline.config.json show it; "unknown" outside a git checkout.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PIPELINE_GIT_HASH={hash}");
    // Rebuild when HEAD moves; in a worktree `.git` is a file, so ask git where HEAD lives.
    for what in ["HEAD", "refs/heads"] {
        match git(&["rev-parse", "--git-path", what]) {
            Some(p) => println!("cargo:rerun-if-changed={p}"),
            None => println!("cargo:rerun-if-changed=../.git/{what}"),
        }
    }
}
