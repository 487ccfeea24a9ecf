//! Cheap text features that help the router beyond the embedding: length, structure, digits,
//! maths and code markers. Twelve numbers, one pass over the prompt, a few microseconds.
//! Definitions match `eval/scripts/router_research.py`, where they were chosen.

pub const NAMES: [&str; 12] = [
    "len_chars_log",
    "len_words_log",
    "newlines_log",
    "digit_frac",
    "number_runs_log",
    "math_sym_frac",
    "has_code",
    "has_qmark",
    "has_mc_options",
    "upper_frac",
    "nonascii_frac",
    "starts_wh",
];

const CODE_MARKERS: &[&str] = &[
    "```",
    "def ",
    "return ",
    "#include",
    "function ",
    "=>",
    "};",
    "import ",
    "print(",
    "public ",
    "console.",
    "SELECT ",
    "</",
];
const WH: &[&str] = &["what", "why", "how", "which", "who", "whom", "whose", "when", "where"];

pub fn text_features(t: &str) -> [f32; 12] {
    let n = t.chars().count();
    let d = n.max(1) as f64;
    let ln1p = |x: usize| (x as f64).ln_1p();
    let (mut digits, mut runs, mut math, mut upper, mut nonascii, mut newlines) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut in_run = false;
    for c in t.chars() {
        let is_digit = c.is_ascii_digit();
        if is_digit {
            digits += 1;
            if !in_run {
                runs += 1;
            }
        }
        in_run = is_digit;
        if "=+*/^<>%\\|".contains(c) {
            math += 1;
        }
        if c.is_ascii_uppercase() {
            upper += 1;
        }
        if c as u32 > 127 {
            nonascii += 1;
        }
        if c == '\n' {
            newlines += 1;
        }
    }
    let first = t
        .split_whitespace()
        .next()
        .map(|w| w.to_lowercase().trim_matches(|c: char| "\"'([{*#:,.;!?".contains(c)).to_string())
        .unwrap_or_default();
    [
        ln1p(n),
        ln1p(t.split_whitespace().count()),
        ln1p(newlines),
        digits as f64 / d,
        ln1p(runs),
        math as f64 / d,
        CODE_MARKERS.iter().any(|m| t.contains(m)) as u8 as f64,
        t.contains('?') as u8 as f64,
        (t.contains("\nA.") && t.contains("\nB.")) as u8 as f64,
        upper as f64 / d,
        nonascii as f64 / d,
        WH.contains(&first.as_str()) as u8 as f64,
    ]
    .map(|x| x as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_python_reference_examples() {
        let want = [4.804021, 3.258097, 0.0, 0.033058, 1.386294, 0.0, 0.0, 1.0, 0.0, 0.024793, 0.0, 0.0];
        let got = text_features(
            "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  How many total meters does he run a week?",
        );
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
        let mc = text_features("Find x.\nA. 0\nB. 4\nAnswer:");
        assert_eq!(mc[8], 1.0);
        assert_eq!(text_features("How do I sort a list?")[11], 1.0);
        assert_eq!(text_features("print(x) => y")[6], 1.0);
    }
}
