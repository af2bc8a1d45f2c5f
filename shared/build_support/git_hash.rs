// The git commit a binary is built from, for the build scripts of `pipeline` and `trainer`
// (each does `include!("../shared/build_support/git_hash.rs")`): one implementation of the
// "git hash in `-V`, configs and manifests" rule. Not part of the mamba-shards library.

/// Sets the compile-time env var `var` to the 12-digit commit of HEAD ("unknown" outside a git
/// checkout) and asks cargo to rerun the build script when HEAD moves.
fn emit_git_hash(var: &str) {
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env={var}={hash}");
    // In a worktree `.git` is a file, so ask git where HEAD and the branch refs live.
    for what in ["HEAD", "refs/heads"] {
        match git(&["rev-parse", "--git-path", what]) {
            Some(p) => println!("cargo:rerun-if-changed={p}"),
            None => println!("cargo:rerun-if-changed=../.git/{what}"),
        }
    }
}

/// `git ARGS`' trimmed stdout, or `None` when git fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
