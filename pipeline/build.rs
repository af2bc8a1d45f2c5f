//! Records the git commit the binary was built from: `pipeline -V`, manifest.json and
//! pipeline.config.json show it; "unknown" outside a git checkout.

include!("../shared/build_support/git_hash.rs");

fn main() {
    emit_git_hash("PIPELINE_GIT_HASH");
}
