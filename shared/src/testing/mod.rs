//! Test support shared by the tests of all three crates (feature `testing`, enabled only through
//! dev-dependencies, so neither binary links it): a binary as a child process ([`child`]), a
//! seeded generator ([`SplitMix64`]), and the hostile variants of a valid shard file that every
//! shard reader must refuse by name ([`hostile_shards`]).

pub mod child;
pub mod hostile_shards;
mod splitmix;

pub use child::Running;
pub use hostile_shards::{hostile_shards, HostileShard};
pub use splitmix::SplitMix64;
