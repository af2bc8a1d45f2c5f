//! GPT-2's pre-tokenizer written out by hand. tiktoken's `r50k_base` splits text with the regex
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! (leftmost-first alternation, matches back to back). The lookahead needs a backtracking engine
//! (fancy-regex), which costs about half of all tokenizing time; the same split written as a
//! loop over characters is several times faster. The character classes are taken from
//! `regex-syntax`, the very tables the regex engine compiles `\p{L}`, `\p{N}` and `\s` from, so
//! both agree on every character. At any position the alternatives resolve like this:
//!
//! 1. `'` followed by `s t m d` or `re ve ll` (lowercase): that contraction.
//! 2. An optional single space `' '`, then a letter, digit or "other" character (neither
//!    whitespace, letter nor digit): the longest run of that one class (after the space).
//! 3. Whitespace: the whole run if it reaches the end of the text; else the run minus its last
//!    character (`\s+(?!\S)` backtracks one step, leaving that character to begin the next piece,
//!    e.g. `" word"`); a run of one character is itself the piece (`\s+`).

use anyhow::{anyhow, bail, Result};
use regex_syntax::hir::{Class as HirClass, HirKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

pub struct Gpt2Split {
    ascii: [Class; 128],
    /// Sorted, disjoint code point ranges (inclusive) of `\p{L}`, `\p{N}` and `\s`.
    letter: Vec<(u32, u32)>,
    number: Vec<(u32, u32)>,
    space: Vec<(u32, u32)>,
}

impl Gpt2Split {
    pub fn new() -> Result<Gpt2Split> {
        let letter = unicode_ranges(r"\p{L}")?;
        let number = unicode_ranges(r"\p{N}")?;
        let space = unicode_ranges(r"\s")?;
        let mut split = Gpt2Split { ascii: [Class::Other; 128], letter, number, space };
        for b in 0..128u8 {
            split.ascii[b as usize] = split.class_slow(b as char);
        }
        Ok(split)
    }

    /// The pieces of `text`, in order; together they are exactly `text`.
    pub fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= text.len() {
                return None;
            }
            let end = at + self.piece_len(&text[at..]);
            let piece = &text[at..end];
            at = end;
            Some(piece)
        })
    }

    /// Length in bytes of the piece that starts `rest` (not empty).
    fn piece_len(&self, rest: &str) -> usize {
        let bytes = rest.as_bytes();
        // 1. contractions
        if bytes[0] == b'\'' && bytes.len() >= 2 {
            match bytes[1] {
                b's' | b't' | b'm' | b'd' => return 2,
                b'r' | b'v' if bytes.get(2) == Some(&b'e') => return 3,
                b'l' if bytes.get(2) == Some(&b'l') => return 3,
                _ => {}
            }
        }
        // 2. ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
        let mut chars = rest.chars();
        let Some(first) = chars.next() else { return 0 };
        let (lead, c) = if first == ' ' {
            match chars.next() {
                Some(c) => (1, c),
                None => (0, first),
            }
        } else {
            (0, first)
        };
        let class = self.class(c);
        if class != Class::Space {
            let mut end = lead + c.len_utf8();
            for ch in rest[end..].chars() {
                if self.class(ch) != class {
                    break;
                }
                end += ch.len_utf8();
            }
            return end;
        }
        // 3. `\s+(?!\S)` then `\s+`
        let (mut end, mut n, mut last) = (0, 0, 0);
        for ch in rest.chars() {
            if self.class(ch) != Class::Space {
                break;
            }
            last = ch.len_utf8();
            end += last;
            n += 1;
        }
        if end < rest.len() && n >= 2 {
            end - last
        } else {
            end
        }
    }

    #[inline]
    fn class(&self, c: char) -> Class {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.class_slow(c)
        }
    }

    fn class_slow(&self, c: char) -> Class {
        let c = c as u32;
        let within = |ranges: &[(u32, u32)]| {
            let i = ranges.partition_point(|&(_, hi)| hi < c);
            ranges.get(i).is_some_and(|&(lo, _)| lo <= c)
        };
        if within(&self.letter) {
            Class::Letter
        } else if within(&self.number) {
            Class::Number
        } else if within(&self.space) {
            Class::Space
        } else {
            Class::Other
        }
    }
}

/// The code point ranges of a one-class regex, as the regex engine sees them.
fn unicode_ranges(class: &str) -> Result<Vec<(u32, u32)>> {
    let hir = regex_syntax::parse(class).map_err(|e| anyhow!("parsing {class}: {e}"))?;
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(c)) => {
            Ok(c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect())
        }
        other => bail!("{class} is not a Unicode class: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        // Leaked so that the pieces may borrow it in the test's return value.
        let s: &'static Gpt2Split = Box::leak(Box::new(Gpt2Split::new().unwrap()));
        s.pieces(text).collect()
    }

    #[test]
    fn known_splits() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("it's   done\n\nNext"), ["it", "'s", "  ", " done", "\n", "\n", "Next"]);
        assert_eq!(split("x  "), ["x", "  "]);
        assert_eq!(split("a\u{a0}b  12ab''s"), ["a", "\u{a0}", "b", " ", " 12", "ab", "''", "s"]);
        assert_eq!(split("'re'll'D"), ["'re", "'ll", "'", "D"]);
        assert_eq!(split(" !?  é\u{301}x"), [" !?", " ", " é", "\u{301}", "x"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split(" "), [" "]);
    }
}
