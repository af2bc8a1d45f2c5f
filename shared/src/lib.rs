//! Shared by `pipeline` and `trainer`: shard format v1 ([`format`]) and the parameters every shard
//! of a corpus shares ([`shard_params`]), writing ([`writer`]) and
//! reading ([`reader`]) shards, crash-safe file updates ([`fsutil`]) and the ring protocol
//! ([`ring`]), and what both binaries do as processes: one writer per directory ([`dir_lock`])
//! and SIGINT/SIGTERM as a stop request ([`stop_signal`]); with the `hub` feature, the Hugging
//! Face Hub client both binaries use ([`hub`]); with the `testing` feature (tests only), helpers
//! the tests of all three crates share ([`testing`]).

pub mod dir_lock;
pub mod error;
pub mod format;
pub mod fsutil;
#[cfg(feature = "hub")]
pub mod hub;
pub mod manifest;
pub mod reader;
pub mod ring;
pub mod shard_params;
pub mod stop_signal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

pub use error::{Result, ShardError};
pub use format::{shard_file_name, Header, Split};
pub use manifest::{DocPos, Manifest, SplitManifest, StreamPos};
pub use reader::ShardReader;
pub use shard_params::ShardParams;
pub use writer::{compress_chunk, ChunkCompressor, ShardWriter};
