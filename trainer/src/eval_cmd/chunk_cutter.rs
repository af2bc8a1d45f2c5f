//! Documents → one token stream → chunks, cut exactly as the pipeline cuts its shards
//! (`pipeline/src/split_stream.rs`): each document is appended as `[eot] + tokens`, and chunk k
//! holds stream tokens `[k·seq_len, k·seq_len + seq_len + 1)`, so consecutive chunks share one
//! token (the last target of chunk k is the first input of chunk k + 1). The tokens after the last
//! whole chunk are the ragged tail: dropped, and counted so the user is told.

pub struct ChunkCutter {
    seq_len: usize,
    eot: u32,
    /// Stream tokens from the first token of the next chunk on.
    buf: Vec<u32>,
    /// Tokens appended so far (the whole stream).
    stream_tokens: u64,
    /// Chunks handed out so far.
    chunks: u64,
}

impl ChunkCutter {
    /// Chunks of `seq_len + 1` tokens; documents start with `eot`.
    pub fn new(seq_len: usize, eot: u32) -> ChunkCutter {
        ChunkCutter { seq_len: seq_len.max(1), eot, buf: Vec::new(), stream_tokens: 0, chunks: 0 }
    }

    /// Appends one document's token ids, preceded by the end-of-text separator.
    pub fn push_doc(&mut self, tokens: &[u32]) {
        self.buf.push(self.eot);
        self.buf.extend_from_slice(tokens);
        self.stream_tokens += tokens.len() as u64 + 1;
    }

    /// The next whole chunk (`seq_len + 1` tokens), if the stream holds one.
    pub fn next_chunk(&mut self) -> Option<Vec<u32>> {
        if self.buf.len() < self.seq_len + 1 {
            return None;
        }
        let chunk = self.buf[..self.seq_len + 1].to_vec();
        // Keep the chunk's last token: it is the first token of the next chunk.
        self.buf.drain(..self.seq_len);
        self.chunks += 1;
        Some(chunk)
    }

    /// Tokens appended so far.
    pub fn stream_tokens(&self) -> u64 {
        self.stream_tokens
    }

    /// Tokens of the stream that no chunk handed out so far covers: after the last document and
    /// the last [`ChunkCutter::next_chunk`], the ragged tail that is dropped.
    pub fn uncovered_tokens(&self) -> u64 {
        if self.chunks == 0 {
            self.stream_tokens
        } else {
            self.stream_tokens - (self.chunks * self.seq_len as u64 + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Same chunks as cutting the concatenated stream directly, whatever the document sizes, and
    /// the tail is what is left after the last chunk.
    #[test]
    fn chunks_overlap_by_one_and_the_tail_is_counted() {
        let docs: Vec<Vec<u32>> = (0..30u32).map(|d| (0..(d * 5 % 13)).map(|t| 100 * d + t).collect()).collect();
        for seq_len in [1, 3, 4, 16, 1000] {
            let mut cut = ChunkCutter::new(seq_len, 9999);
            let mut got = Vec::new();
            for d in &docs {
                cut.push_doc(d);
                while let Some(c) = cut.next_chunk() {
                    got.push(c);
                }
            }
            let stream: Vec<u32> = docs.iter().flat_map(|d| std::iter::once(9999).chain(d.iter().copied())).collect();
            let n = (stream.len() - 1) / seq_len;
            let want: Vec<Vec<u32>> = (0..n).map(|k| stream[k * seq_len..k * seq_len + seq_len + 1].to_vec()).collect();
            assert_eq!(got, want, "seq_len {seq_len}");
            assert_eq!(cut.stream_tokens(), stream.len() as u64);
            let tail = if n == 0 { stream.len() } else { stream.len() - (n * seq_len + 1) };
            assert_eq!(cut.uncovered_tokens(), tail as u64, "seq_len {seq_len}");
            assert!(tail < seq_len || n == 0, "the tail is shorter than one chunk");
        }
    }
}
