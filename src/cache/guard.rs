//! The near-miss guard: cheap lexical checks that veto a semantic hit when two questions that
//! embed close together still ask different things.
//!
//! MiniLM puts "Is the iPhone 13 waterproof?" and "Is the iPhone 14 waterproof?" at cosine ≈ 0.98,
//! and no global threshold that still serves paraphrases can tell them apart. A hit is vetoed when:
//! * **number**: both questions contain numbers and the sets differ ("2nd year" / "3rd year");
//! * **negation**: one side is negated and the other is not;
//! * **entity swap**: each side names an entity (a capitalised word not at a sentence start) that
//!   the other does not contain ("Trump" / "Clinton");
//! * **antonym**: a word on one side only has its antonym on the other side only ("similar" /
//!   "different", "guys" / "girls").
//!
//! The definitions were fitted and measured offline on the QQP dev pairs by cross-validation
//! (`eval/scripts/cache_features.py` is the reference; `switchyard eval cache` reproduces it), and
//! cost a few microseconds per lookup.

use std::collections::HashSet;

const NEGATION_WORDS: &[&str] = &[
    "not", "no", "never", "nothing", "nobody", "none", "neither", "nor", "without", "cannot", "cant", "dont", "doesnt",
    "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt",
    "aint",
];

/// Capitalised words that are not named entities.
const ENTITY_STOP: &[&str] = &[
    "i", "a", "an", "the", "what", "why", "how", "when", "where", "which", "who", "whom", "whose", "is", "are", "was",
    "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "has",
    "have", "had", "be", "been", "am", "if", "and", "or", "but", "so", "not", "no", "yes", "my", "me", "we", "our",
    "you", "your", "he", "she", "it", "its", "they", "them", "their", "this", "that", "these", "those", "there",
    "here", "in", "on", "at", "of", "for", "to", "from", "by", "with", "about", "as", "into", "over", "after",
    "before", "under", "between", "vs", "please", "any", "some", "all", "one", "best", "good", "new",
];

const ANTONYM_PAIRS: &[(&str, &str)] = &[
    ("similar", "different"),
    ("similarities", "differences"),
    ("similarity", "difference"),
    ("same", "different"),
    ("similar", "differ"),
    ("same", "differ"),
    ("advantages", "disadvantages"),
    ("advantage", "disadvantage"),
    ("pros", "cons"),
    ("best", "worst"),
    ("better", "worse"),
    ("good", "bad"),
    ("positive", "negative"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("increase", "decrease"),
    ("before", "after"),
    ("men", "women"),
    ("man", "woman"),
    ("male", "female"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("guys", "girls"),
    ("husband", "wife"),
    ("boyfriend", "girlfriend"),
    ("father", "mother"),
    ("son", "daughter"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("rich", "poor"),
    ("win", "lose"),
    ("start", "stop"),
    ("love", "hate"),
    ("easy", "hard"),
    ("easiest", "hardest"),
    ("fast", "slow"),
    ("gain", "lose"),
    ("high", "low"),
    ("legal", "illegal"),
    ("true", "false"),
    ("right", "wrong"),
    ("success", "failure"),
    ("learn", "teach"),
    ("import", "export"),
    ("input", "output"),
    ("upload", "download"),
    ("send", "receive"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("first", "last"),
    ("old", "new"),
];

/// What the guard needs to know about one question.
#[derive(Debug, Default)]
pub struct Analysis {
    words: HashSet<String>,
    numbers: HashSet<String>,
    negations: usize,
    entities: HashSet<String>,
}

/// Tokens are maximal runs of ASCII letters and digits; everything else separates. The flag says
/// whether the token starts a sentence (first token, or first after `.`, `?`, `!` + whitespace).
fn tokens(s: &str) -> Vec<(&str, bool)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut sentence_start = true;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push((&s[start..i], sentence_start));
            sentence_start = false;
        } else {
            if matches!(bytes[i], b'.' | b'?' | b'!') && bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace()) {
                sentence_start = true;
            }
            i += 1;
        }
    }
    out
}

pub fn analyse(s: &str) -> Analysis {
    let toks = tokens(s);
    let mut a = Analysis::default();
    let mut prev: Option<String> = None;
    for (orig, starts_sentence) in toks {
        let low = orig.to_ascii_lowercase();
        if low.bytes().any(|b| b.is_ascii_digit()) {
            a.numbers.insert(low.clone());
        }
        if NEGATION_WORDS.contains(&low.as_str()) || (low == "t" && prev.as_deref().is_some_and(|p| p.ends_with('n'))) {
            a.negations += 1;
        }
        if !starts_sentence && orig.as_bytes()[0].is_ascii_uppercase() && !ENTITY_STOP.contains(&low.as_str()) {
            a.entities.insert(low.clone());
        }
        a.words.insert(low.clone());
        prev = Some(low);
    }
    a
}

/// Which check vetoed a pair, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Number,
    Negation,
    EntitySwap,
    Antonym,
}

pub fn conflict_between(a: &Analysis, b: &Analysis) -> Option<Conflict> {
    if !a.numbers.is_empty() && !b.numbers.is_empty() && a.numbers != b.numbers {
        return Some(Conflict::Number);
    }
    if (a.negations > 0) != (b.negations > 0) {
        return Some(Conflict::Negation);
    }
    let a_only_ent = a.entities.iter().any(|e| !b.words.contains(e));
    let b_only_ent = b.entities.iter().any(|e| !a.words.contains(e));
    if a_only_ent && b_only_ent {
        return Some(Conflict::EntitySwap);
    }
    for (x, y) in ANTONYM_PAIRS {
        let has = |an: &Analysis, w: &str| an.words.contains(w);
        if (has(a, x) && !has(b, x) && has(b, y) && !has(a, y)) || (has(a, y) && !has(b, y) && has(b, x) && !has(a, x))
        {
            return Some(Conflict::Antonym);
        }
    }
    None
}

/// The veto check for a cached question `a` and a new question `b`.
pub fn conflict(a: &str, b: &str) -> Option<Conflict> {
    conflict_between(&analyse(a), &analyse(b))
}

/// True when `a` and `b` must not share an answer whatever their similarity.
pub fn conflicts(a: &str, b: &str) -> bool {
    conflict(a, b).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_fires_on_its_near_miss_and_not_on_paraphrases() {
        assert_eq!(conflict("Is the iPhone 13 waterproof?", "Is the iPhone 14 waterproof?"), Some(Conflict::Number));
        assert_eq!(conflict("Is it safe to eat raw eggs?", "Isn't it safe to eat raw eggs?"), Some(Conflict::Negation));
        assert_eq!(conflict("Why did Trump win?", "Why did Clinton win?"), Some(Conflict::EntitySwap));
        assert_eq!(
            conflict("What are the similarities between C and Java?", "What are the differences between C and Java?"),
            Some(Conflict::Antonym)
        );
        assert_eq!(conflict("How do I reset my password?", "How can I reset my password?"), None);
        assert_eq!(conflict("Why can't I sleep?", "Why cannot I sleep at night?"), None);
        // a number on one side only is not a conflict (it is often an added detail)
        assert_eq!(conflict("Best laptop for students?", "Best laptop for students in 2024?"), None);
        // a capitalised first word is not an entity
        assert_eq!(conflict("Python or Java for beginners?", "Java or Python for beginners?"), None);
    }
}
