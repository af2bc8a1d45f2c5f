//! Embeds the git commit into the binary (`GIT_HASH`), recorded in resolved configs and
//! checkpoints. "unknown" when built outside a git checkout.

include!("../shared/build_support/git_hash.rs");

fn main() {
    emit_git_hash("GIT_HASH");
}
