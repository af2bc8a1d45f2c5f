//! Opening a shard for training: the shared reader checks magic, version, header and index; here
//! we add what the *model* needs (chunk length = seq_len + 1, vocabulary within the model's).

use std::path::Path;

use mamba_shards::shard_params::chunk_tokens_for;
use mamba_shards::ShardReader;

use super::error::DataError;

/// Checks that `reader`'s chunks fit a model with `seq_len` and `vocab_size` (padded vocab).
pub(crate) fn check_fits_model(reader: &ShardReader, seq_len: usize, vocab_size: usize) -> Result<(), DataError> {
    let h = reader.header();
    let expected = chunk_tokens_for(seq_len);
    if h.chunk_tokens as usize != expected {
        return Err(DataError::WrongChunkTokens {
            path: reader.path().into(),
            found: h.chunk_tokens as usize,
            expected,
            seq_len,
        });
    }
    if h.vocab_size as usize > vocab_size {
        return Err(DataError::VocabTooLarge {
            path: reader.path().into(),
            shard_vocab: h.vocab_size as usize,
            model_vocab: vocab_size,
        });
    }
    Ok(())
}

/// Opens (memory-maps) `path` and checks that it fits the model. Frames are not decompressed.
pub(crate) fn open_for_model(path: &Path, seq_len: usize, vocab_size: usize) -> Result<ShardReader, DataError> {
    let reader = ShardReader::open(path)?;
    check_fits_model(&reader, seq_len, vocab_size)?;
    Ok(reader)
}
