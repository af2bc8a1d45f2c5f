//! One split's token stream: documents appended as `[eot] + tokens`, cut into chunks of
//! `seq_len + 1` tokens that overlap by one (chunk k = stream tokens [k·seq_len, k·seq_len+seq_len+1)).
//!
//! The stream remembers which source document each buffered token came from, so that after chunks
//! are published it can say exactly where in the source the next unpublished token is
//! ([`SplitStream::resume_pos`]). A resumed run starts from that position, skipping what is
//! already published, which makes its stream identical to an uninterrupted run.

use std::collections::VecDeque;

use mamba_shards::{DocPos, SplitManifest, StreamPos};

#[derive(Debug, Clone, Copy)]
struct DocMark {
    pos: DocPos,
    /// Stream index of the document's leading eot.
    stream_start: u64,
    len: u64,
}

pub struct SplitStream {
    seq_len: u64,
    /// Stream tokens from `buf_start` on; `buf_start` is where the next chunk starts.
    buf: Vec<u32>,
    buf_start: u64,
    /// Documents with tokens in `buf`, oldest first.
    marks: VecDeque<DocMark>,
    /// Documents before `resume.doc` are already published; `resume.doc` from `resume.offset` on.
    resume: StreamPos,
}

impl SplitStream {
    /// Continues a split from its manifest entry (all zero for a new corpus).
    pub fn resume(seq_len: usize, m: &SplitManifest) -> SplitStream {
        SplitStream {
            seq_len: seq_len as u64,
            buf: Vec::new(),
            buf_start: m.tokens,
            marks: VecDeque::new(),
            resume: m.resume,
        }
    }

    /// Tokens of this document still to be appended: `None` if it is all published already,
    /// else the offset into `[eot] + tokens` to start from.
    pub fn wants(&self, pos: DocPos) -> Option<u64> {
        use std::cmp::Ordering::*;
        match pos.cmp(&self.resume.doc) {
            Less => None,
            Equal => Some(self.resume.offset),
            Greater => Some(0),
        }
    }

    /// Total stream length so far (published + buffered).
    pub fn len(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Stream index at which a document appended now would start (for the `--max-tokens` rule).
    pub fn doc_start(&self, pos: DocPos) -> u64 {
        match self.wants(pos) {
            Some(offset) => self.len() - offset.min(self.len()),
            None => 0,
        }
    }

    /// Appends `[eot] + tokens` (from the resume offset, for the resume document).
    pub fn push_doc(&mut self, pos: DocPos, eot: u32, tokens: &[u32]) {
        let Some(offset) = self.wants(pos) else { return };
        let len = tokens.len() as u64 + 1;
        if offset >= len {
            return; // cannot happen with a consistent manifest; nothing left of this document
        }
        self.marks.push_back(DocMark { pos, stream_start: self.len() - offset, len });
        if offset == 0 {
            self.buf.push(eot);
            self.buf.extend_from_slice(tokens);
        } else {
            self.buf.extend_from_slice(&tokens[offset as usize - 1..]);
        }
    }

    /// Complete chunks available now (a chunk needs seq_len + 1 tokens).
    pub fn full_chunks(&self) -> usize {
        if self.buf.len() as u64 > self.seq_len {
            ((self.buf.len() as u64 - 1) / self.seq_len) as usize
        } else {
            0
        }
    }

    /// The tokens of the next `n` chunks, back to back: `n·seq_len + 1` tokens (chunk k is
    /// `[k·seq_len, k·seq_len + seq_len + 1)` of the result). Nothing is consumed yet.
    pub fn peek_chunks(&self, n: usize) -> &[u32] {
        &self.buf[..n * self.seq_len as usize + 1]
    }

    /// Drops `n` published chunks; the last token stays (it starts the next chunk).
    pub fn consume_chunks(&mut self, n: usize) {
        let drop = n * self.seq_len as usize;
        self.buf.drain(..drop);
        self.buf_start += drop as u64;
        while let Some(m) = self.marks.front() {
            if m.stream_start + m.len <= self.buf_start {
                self.marks.pop_front();
            } else {
                break;
            }
        }
        self.resume = self.resume_pos();
    }

    /// Stream index of the next chunk's first token.
    pub fn published_tokens(&self) -> u64 {
        self.buf_start
    }

    /// Source position of stream token `buf_start` (the next unpublished one).
    pub fn resume_pos(&self) -> StreamPos {
        match self.marks.front() {
            Some(m) => StreamPos { doc: m.pos, offset: self.buf_start - m.stream_start },
            None => self.resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(row: u64) -> DocPos {
        DocPos { file: 0, row }
    }

    /// Chunks of a stream built document by document, and of one resumed midway, are identical.
    #[test]
    fn chunks_overlap_and_resume_is_exact() {
        let docs: Vec<Vec<u32>> =
            (0..20).map(|d| (0..(d * 7 % 11) as u32).map(|t| 100 * d as u32 + t).collect()).collect();
        let seq_len = 4usize;
        let run = |stop_after: Option<usize>| -> Vec<Vec<u32>> {
            let mut chunks = Vec::new();
            let mut m = SplitManifest::default();
            let mut s = SplitStream::resume(seq_len, &m);
            for (i, d) in docs.iter().enumerate() {
                s.push_doc(pos(i as u64), 9999, d);
                let n = s.full_chunks();
                if n >= 2 {
                    let all = s.peek_chunks(2).to_vec();
                    chunks.extend(all.windows(5).step_by(4).map(<[u32]>::to_vec));
                    s.consume_chunks(2);
                    m.tokens = s.published_tokens();
                    m.resume = s.resume_pos();
                    if stop_after == Some(chunks.len()) {
                        // "crash": restart from the manifest and re-read every document
                        let mut r = SplitStream::resume(seq_len, &m);
                        for (j, d) in docs.iter().enumerate() {
                            r.push_doc(pos(j as u64), 9999, d);
                        }
                        let n = r.full_chunks();
                        let all = r.peek_chunks(n).to_vec();
                        chunks.extend(all.windows(5).step_by(4).map(<[u32]>::to_vec));
                        return chunks;
                    }
                }
            }
            let n = s.full_chunks();
            let all = s.peek_chunks(n).to_vec();
            chunks.extend(all.windows(5).step_by(4).map(<[u32]>::to_vec));
            chunks
        };
        let full = run(None);
        let flat: Vec<u32> = docs.iter().flat_map(|d| std::iter::once(9999).chain(d.iter().copied())).collect();
        assert_eq!(full.len(), (flat.len() - 1) / 4);
        for (k, c) in full.iter().enumerate() {
            assert_eq!(c[..], flat[k * 4..k * 4 + 5]);
        }
        for stop in [2, 4, 6, 8] {
            assert_eq!(run(Some(stop)), full, "resumed after {stop} chunks");
        }
    }
}
