//! The near-miss guard: cheap checks that veto a semantic hit when two questions that embed close
//! together still ask different things — a different number, a negation on one side only.
//!
//! MiniLM places "What is 2+3?" and "What is 2+4?" at cosine ≈ 0.98; no global threshold that
//! still serves paraphrases can tell them apart. These checks can, in well under a microsecond.

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '.')
        .map(|t| t.trim_matches(|c: char| c == '.' || c == '\'').to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn numbers(toks: &[String]) -> Vec<String> {
    let mut v: Vec<String> = toks.iter().filter(|t| t.chars().any(|c| c.is_ascii_digit())).cloned().collect();
    v.sort();
    v.dedup();
    v
}

const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "without",
    "nothing",
    "none",
    "nobody",
    "neither",
    "nor",
    "cannot",
    "can't",
    "cant",
    "don't",
    "dont",
    "doesn't",
    "doesnt",
    "didn't",
    "didnt",
    "isn't",
    "isnt",
    "aren't",
    "arent",
    "wasn't",
    "wasnt",
    "weren't",
    "werent",
    "won't",
    "wont",
    "wouldn't",
    "wouldnt",
    "shouldn't",
    "shouldnt",
    "couldn't",
    "couldnt",
    "haven't",
    "havent",
    "hasn't",
    "hasnt",
    "n't",
];

fn negated(toks: &[String]) -> bool {
    toks.iter().filter(|t| NEGATIONS.contains(&t.as_str())).count() % 2 == 1
}

/// True when `a` and `b` must not share an answer whatever their similarity.
pub fn conflicts(a: &str, b: &str) -> bool {
    let (ta, tb) = (tokens(a), tokens(b));
    numbers(&ta) != numbers(&tb) || negated(&ta) != negated(&tb)
}

#[cfg(test)]
mod tests {
    use super::conflicts;

    #[test]
    fn numbers_and_negations_conflict_paraphrases_do_not() {
        assert!(conflicts("What is 2+3?", "What is 2+4?"));
        assert!(conflicts("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"));
        assert!(conflicts("Best phone under $300", "Best phone under $500"));
        assert!(!conflicts("How do I reset my password?", "How can I reset my password?"));
        assert!(!conflicts("Why can't I sleep?", "Why cannot I sleep?"));
    }
}
