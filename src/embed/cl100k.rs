//! Token ids → text for OpenAI's `cl100k_base` encoding, so `/v1/embeddings` accepts the token
//! arrays the spec allows (`[1, 2, 3]`, `[[1, 2], [3]]`). Clients send them unasked: LangChain's
//! `OpenAIEmbeddings` tokenizes with tiktoken's cl100k_base before calling. Our embedding model has
//! its own tokenizer, so the ids are decoded back to the text they stand for and embedded as text.
//!
//! The vocabulary is compiled in (`assets/tiktoken/`, 727 KiB: each token's bytes, length
//! prefixed, in rank order; converted from the `cl100k_base.tiktoken` file `tiktoken-rs` 0.7.0
//! ships, whose SHA-256 matches OpenAI's published file; see `assets/tiktoken/PROVENANCE.md`).
//! tiktoken itself downloads the file at run time, which a gateway should not need to do.

use std::sync::OnceLock;

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
