//! The built-in GPT-2 tokenizer: tiktoken-rs's `r50k_base` ranks (shipped inside the crate, so no
//! network and no user file), with the regex split replaced by the hand-written [`Gpt2Split`].
//! Ids are exactly `CoreBPE::encode_ordinary`'s (tested on real and adversarial text); only the
//! splitting is faster. Each piece is looked up whole first (most words are one token); other
//! pieces are merged by tiktoken's own byte-pair code.

use anyhow::{anyhow, Context, Result};
use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, Rank};

use crate::gpt2_split::Gpt2Split;

/// GPT-2's end-of-text id (the only special token) and vocabulary size.
pub const EOT: u32 = 50256;
pub const VOCAB: u32 = 50257;

/// Pieces this long go through tiktoken's whole encoder, whose merge is O(n log n) for them.
const LONG_PIECE: usize = 100;

pub struct Gpt2 {
    bpe: CoreBPE,
    /// Bytes → rank of every ordinary token (the table `bpe` holds privately).
    ranks: FxHashMap<Vec<u8>, Rank>,
    split: Gpt2Split,
}

impl Gpt2 {
    pub fn new() -> Result<Gpt2> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| anyhow!("building the GPT-2 tokenizer: {e}"))?;
        let mut ranks = FxHashMap::default();
        for rank in 0..EOT {
            let bytes = bpe.decode_bytes(&[rank]).map_err(|e| anyhow!("GPT-2 ranks: token {rank}: {e}"))?;
            ranks.insert(bytes, rank);
        }
        Ok(Gpt2 { bpe, ranks, split: Gpt2Split::new().context("GPT-2 pre-tokenizer")? })
    }

    /// Same ids as `CoreBPE::encode_ordinary(text)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        for piece in self.split.pieces(text) {
            let bytes = piece.as_bytes();
            if let Some(&rank) = self.ranks.get(bytes) {
                ids.push(rank);
            } else if bytes.len() >= LONG_PIECE {
                // A piece is split by the regex into itself alone, so this encodes just the piece.
                ids.extend(self.bpe.encode_ordinary(piece));
            } else {
                for part in tiktoken_rs::byte_pair_split(bytes, &self.ranks) {
                    let rank = self
                        .ranks
                        .get(part)
                        .ok_or_else(|| anyhow!("GPT-2 merge produced an unknown token {part:?}"))?;
                    ids.push(*rank);
                }
            }
        }
        Ok(ids)
    }

    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.bpe.decode_bytes(ids).map_err(|e| anyhow!("decoding: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    fn shared_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
    }

    /// Every document of fineweb-mini and of tinyshakespeare: ids equal tiktoken's.
    #[test]
    fn same_ids_as_tiktoken_on_the_corpus() {
        use arrow::array::{Array, AsArray};
        let fast = Gpt2::new().unwrap();
        let mut n = 0;
        let fineweb = "corpus/fineweb-mini/sample/10BT";
        let files = ["000_00000", "001_00000", "002_00000"].map(|f| format!("{fineweb}/{f}.parquet"));
        for file in files.iter().map(String::as_str).chain(["corpus/tinyshakespeare.parquet"]) {
            let f = std::fs::File::open(shared_dir().join(file)).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name("text").unwrap().as_string::<i32>().clone();
                let texts: Vec<&str> = (0..col.len()).map(|i| col.value(i)).collect();
                for &t in &texts {
                    let want = fast.bpe.encode_ordinary(t);
                    assert_eq!(
                        fast.encode(t).unwrap(),
                        want,
                        "{file}: ids differ on a document starting {:?}",
                        &t[..t.len().min(60)]
                    );
                    n += want.len();
                }
            }
        }
        assert!(n > 15_000_000, "compared {n} tokens");
    }

    /// Random strings over the characters where the split rules meet (spaces of several kinds,
    /// apostrophes, contractions, letters/digits outside ASCII, combining marks, emoji, long runs).
    #[test]
    fn same_ids_as_tiktoken_on_adversarial_text() {
        let fast = Gpt2::new().unwrap();
        let atoms = [
            " ",
            "  ",
            "\n",
            "\n\n",
            "\t",
            "\r\n",
            "\u{a0}",
            "\u{2028}",
            "\u{3000}",
            "'",
            "'s",
            "'t",
            "'re",
            "'ve",
            "'m",
            "'ll",
            "'d",
            "'S",
            "'x",
            "a",
            "Z",
            "é",
            "e\u{301}",
            "日本",
            "ß",
            "ǅ",
            "ʰ",
            "1",
            "42",
            "٣",
            "²",
            "Ⅻ",
            "½",
            "!",
            "?!",
            "...",
            "-",
            "—",
            "€",
            "😀",
            "\u{200b}",
            "\u{0}",
            "<|endoftext|>",
            "==========",
            "          ",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.gen_range(1..12);
            let text: String = (0..len).map(|_| atoms[rng.gen_range(0..atoms.len())]).collect();
            assert_eq!(fast.encode(&text).unwrap(), fast.bpe.encode_ordinary(&text), "text {text:?}");
        }
        // Long pieces (the O(n log n) path) and long whitespace runs.
        for text in ["x".repeat(5000), " ".repeat(3000) + "y", "=-".repeat(700), "\n".repeat(999)] {
            assert_eq!(fast.encode(&text).unwrap(), fast.bpe.encode_ordinary(&text));
        }
    }
}
