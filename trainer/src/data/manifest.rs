//! What follow mode needs from the pipeline's `manifest.json` (`mamba_shards::Manifest`): whether
//! the pipeline has finished (published its last shard), and the shard parameters, checked against
//! the model before waiting for shards that could never be used. The pipeline rewrites the
//! manifest atomically after each shard's rename, so "finished" plus a listing taken *after*
//! reading it sees every shard.

use std::path::Path;

use mamba_shards::ring::MANIFEST_FILE;
use mamba_shards::shard_params::chunk_tokens_for;
use mamba_shards::Manifest;

use super::error::DataError;

/// `true` once the pipeline in `dir` says it has published everything it will publish
/// (`false` while there is no manifest yet).
pub(crate) fn pipeline_finished(dir: &Path) -> Result<bool, DataError> {
    Ok(Manifest::read(dir)?.is_some_and(|m| m.finished))
}

/// Refuses a pipeline whose chunks do not fit the model (checked at open, so the trainer does not
/// wait for shards it would reject). No manifest yet: nothing to check.
pub(crate) fn check_manifest_fits_model(dir: &Path, seq_len: usize, vocab_size: usize) -> Result<(), DataError> {
    let Some(m) = Manifest::read(dir)? else { return Ok(()) };
    let path = dir.join(MANIFEST_FILE);
    if m.params.seq_len() != seq_len {
        return Err(DataError::WrongChunkTokens {
            path,
            found: m.params.chunk_tokens(),
            expected: chunk_tokens_for(seq_len),
            seq_len,
        });
    }
    if m.params.vocab_size as usize > vocab_size {
        return Err(DataError::VocabTooLarge {
            path,
            shard_vocab: m.params.vocab_size as usize,
            model_vocab: vocab_size,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::tests::{params, write_manifest, SEQ_LEN, VOCAB};

    #[test]
    fn reads_the_finished_flag_and_checks_the_shard_params() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!pipeline_finished(dir.path()).unwrap());
        assert!(check_manifest_fits_model(dir.path(), 99, 1).is_ok(), "no manifest, nothing to check");
        write_manifest(dir.path(), false, params());
        assert!(!pipeline_finished(dir.path()).unwrap());
        write_manifest(dir.path(), true, params());
        assert!(pipeline_finished(dir.path()).unwrap());
        assert!(check_manifest_fits_model(dir.path(), SEQ_LEN, VOCAB as usize).is_ok());
        let e = check_manifest_fits_model(dir.path(), SEQ_LEN + 1, VOCAB as usize).unwrap_err();
        assert!(matches!(e, DataError::WrongChunkTokens { .. }) && e.to_string().contains("manifest.json"), "{e}");
        let e = check_manifest_fits_model(dir.path(), SEQ_LEN, VOCAB as usize - 1).unwrap_err();
        assert!(matches!(e, DataError::VocabTooLarge { .. }), "{e}");
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let e = pipeline_finished(dir.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json"), "{e}");
    }
}
