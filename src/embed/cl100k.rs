//! OpenAI's `cl100k_base` encoding: token ids → text, so `/v1/embeddings` accepts the token arrays
//! the spec allows (`[1, 2, 3]`, `[[1, 2], [3]]`; LangChain's `OpenAIEmbeddings` tokenizes with
//! tiktoken before calling, and our embedding model has its own tokenizer, so the ids are decoded
//! and embedded as text); and text → ids, so a token count can be estimated for an upstream that
//! has no count endpoint (`/v1/messages/count_tokens` on an OpenAI-compatible deployment).
//!
//! The vocabulary is compiled in (`assets/tiktoken/`, 727 KiB: each token's bytes, length
//! prefixed, in rank order; converted from the `cl100k_base.tiktoken` file `tiktoken-rs` 0.7.0
//! ships, whose SHA-256 matches OpenAI's published file; see `assets/tiktoken/PROVENANCE.md`).
//! tiktoken itself downloads the file at run time, which a gateway should not need to do.
//! Encoding is tiktoken's: its pre-tokenising pattern, then byte-pair merges lowest rank first.

use std::collections::HashMap;
use std::sync::OnceLock;

use fancy_regex::Regex;

static RANKS: &[u8] = include_bytes!("../../assets/tiktoken/cl100k_base.ranks");

/// Ordinary tokens in cl100k_base (ranks `0..100256`).
pub const VOCAB: usize = 100_256;

/// The special tokens tiktoken's cl100k_base defines, decoded to their literal text.
const SPECIAL: [(u32, &str); 5] = [
    (100_257, "<|endoftext|>"),
    (100_258, "<|fim_prefix|>"),
    (100_259, "<|fim_middle|>"),
    (100_260, "<|fim_suffix|>"),
    (100_276, "<|endofprompt|>"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token id {0} is not in the cl100k_base vocabulary")]
pub struct UnknownToken(pub u32);

/// Where each token's bytes start in [`RANKS`] (the length byte precedes them), built once.
fn offsets() -> &'static [u32] {
    static OFFSETS: OnceLock<Vec<u32>> = OnceLock::new();
    OFFSETS.get_or_init(|| {
        let mut out = Vec::with_capacity(VOCAB);
        let mut at = 0usize;
        while at < RANKS.len() {
            out.push(at as u32);
            at += 1 + RANKS[at] as usize;
        }
        out
    })
}

fn token_bytes(id: u32) -> Option<&'static [u8]> {
    let start = *offsets().get(id as usize)? as usize;
    let len = *RANKS.get(start)? as usize;
    RANKS.get(start + 1..start + 1 + len)
}

/// tiktoken's pre-tokenising pattern for cl100k_base (`tiktoken_ext/openai_public.py`).
const PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// A piece longer than this is merged in chunks of it. Byte-pair merging is quadratic in a
/// piece's length, and one piece can be a whole body (a run of punctuation); no token in the
/// vocabulary is near this long, so only such runs count slightly differently.
const MAX_PIECE: usize = 256;

/// Each token's bytes → its rank, built once (about 100k entries).
fn ranks() -> &'static HashMap<&'static [u8], u32> {
    static MAP: OnceLock<HashMap<&'static [u8], u32>> = OnceLock::new();
    MAP.get_or_init(|| (0..VOCAB as u32).filter_map(|id| Some((token_bytes(id)?, id))).collect())
}

/// The compiled pattern; `None` only if the constant failed to compile (a bug the tests catch),
/// in which case [`encode`] merges the text in [`MAX_PIECE`] chunks and its count is rougher.
fn pattern() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(PATTERN).ok()).as_ref()
}

/// The cl100k_base token ids of `text`, as tiktoken's `encode_ordinary` gives them (special
/// tokens are plain text here).
pub fn encode(text: &str) -> Vec<u32> {
    let ranks = ranks();
    let mut out = Vec::with_capacity(text.len() / 3 + 1);
    let mut at = 0;
    while at < text.len() {
        // the pattern matches every character (its last branch is `\s`, and the others cover
        // the rest), so a failed or empty match can only be a backtracking limit: the rest is
        // then merged as one piece
        let piece = match pattern().map(|re| re.find_from_pos(text, at)) {
            Some(Ok(Some(m))) if m.end() > at => &text.as_bytes()[m.start()..m.end()],
            _ => &text.as_bytes()[at..],
        };
        at += piece.len().max(1);
        for chunk in piece.chunks(MAX_PIECE) {
            match ranks.get(chunk) {
                Some(&id) => out.push(id),
                None => merge(chunk, ranks, &mut out),
            }
        }
    }
    out
}

/// How many cl100k_base tokens `text` is.
pub fn count(text: &str) -> usize {
    encode(text).len()
}

/// tiktoken's byte-pair merge of one piece: repeatedly joins the adjacent pair whose joined bytes
/// have the lowest rank (the leftmost on a tie) until no joined pair is a token.
fn merge(piece: &[u8], ranks: &HashMap<&'static [u8], u32>, out: &mut Vec<u32>) {
    // bounds[i]..bounds[i + 1] is a part; rank[i] the rank of parts i and i + 1 joined
    let mut bounds: Vec<usize> = (0..=piece.len()).collect();
    let pair = |b: &[usize], i: usize| -> u32 {
        b.get(i + 2).and_then(|&end| ranks.get(&piece[b[i]..end]).copied()).unwrap_or(u32::MAX)
    };
    let mut rank: Vec<u32> = (0..bounds.len() - 1).map(|i| pair(&bounds, i)).collect();
    // the lowest rank, the leftmost of equals (`min_by_key` keeps the first)
    while let Some((i, _)) = rank.iter().enumerate().filter(|(_, r)| **r != u32::MAX).min_by_key(|(_, r)| **r) {
        bounds.remove(i + 1);
        rank.remove(i + 1);
        rank[i] = pair(&bounds, i);
        if i > 0 {
            rank[i - 1] = pair(&bounds, i - 1);
        }
    }
    for w in bounds.windows(2) {
        // every single byte is a token, so a part that is not can only come from a bug
        out.push(ranks.get(&piece[w[0]..w[1]]).copied().unwrap_or(u32::MAX));
    }
}

/// The text `ids` encode. Bytes of a character split across the ends of the array are replaced
/// with U+FFFD, as tiktoken's `decode` does.
pub fn decode(ids: &[u32]) -> Result<String, UnknownToken> {
    let mut bytes = Vec::with_capacity(ids.len() * 4);
    for &id in ids {
        match token_bytes(id) {
            Some(b) => bytes.extend_from_slice(b),
            None => match SPECIAL.iter().find(|(s, _)| *s == id) {
                Some((_, text)) => bytes.extend_from_slice(text.as_bytes()),
                None => return Err(UnknownToken(id)),
            },
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_vocabulary_is_the_vendored_file() {
        assert_eq!(
            hex::encode(Sha256::digest(RANKS)),
            "6bfd43f7b31b50b645b3228413547e662af1ae4801e9b192b9791680a71d650c"
        );
        assert_eq!(offsets().len(), VOCAB);
    }

    /// Every text of the fixture (edge cases, random strings, dev prompts) encodes to exactly the
    /// ids OpenAI's tiktoken gives (`eval/scripts/make_cl100k_fixture.py`).
    #[test]
    fn encodes_as_tiktoken_does() {
        let fixture = include_str!("../../tests/fixtures/cl100k_encode.jsonl");
        let mut n = 0;
        for line in fixture.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap();
            let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(encode(text), want, "{text:?}");
            assert_eq!(decode(&want).unwrap(), text);
            n += 1;
        }
        assert!(n > 400, "{n} texts");
        assert!(pattern().is_some(), "the pattern compiles");
        assert_eq!(encode("hello world"), [15339, 1917]);
        assert_eq!(count("antidisestablishmentarianism"), 6);
    }

    #[test]
    fn decodes_what_tiktoken_encodes() {
        // tiktoken.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
        assert_eq!(decode(&[15339, 1917]).unwrap(), "hello world");
        // "Hello, world!" == [9906, 11, 1917, 0]
        assert_eq!(decode(&[9906, 11, 1917, 0]).unwrap(), "Hello, world!");
        assert_eq!(decode(&[100_255]).unwrap(), " Conveyor", "the last ordinary rank");
        assert_eq!(decode(&[100_257]).unwrap(), "<|endoftext|>");
        assert_eq!(decode(&[100_256]), Err(UnknownToken(100_256)));
        assert_eq!(decode(&[u32::MAX]), Err(UnknownToken(u32::MAX)));
        assert_eq!(decode(&[]).unwrap(), "");
    }
}
