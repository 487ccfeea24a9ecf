"""Cheap lexical pair features for the semantic-cache decision rule.

Everything here is meant to be reimplemented byte-for-byte in Rust, so it is deliberately simple:

* folding: the text is NFKD-normalised and all combining marks (general category M*) are dropped
  ("Zürich" -> "Zurich", "ﬁ" -> "fi", fullwidth digits -> ASCII).
* tokens: maximal runs of ASCII letters/digits  [A-Za-z0-9]+  in the folded text (case kept for the
  entity test); `low` = the same tokens lower-cased (ASCII lower-casing). Everything else (spaces,
  punctuation, apostrophes, non-Latin letters, emoji) is a separator.
* numbers: the set of maximal ASCII digit runs [0-9]+ in the folded text ("2nd" -> "2",
  "CS-101" and "cs101" -> "101", "3.14" -> "3","14"; no leading-zero stripping).
* negation count: number of lower-cased tokens in NEGATION_WORDS, plus the number of tokens equal to
  "t" whose previous token ends in "n" (the split form of don't / isn't / can't / won't ...).
* entity tokens: tokens whose first character is an ASCII upper-case letter, that are not the first
  token of the text and not the first token after a sentence end ('.', '?', '!' followed by
  whitespace), whose lower-cased form is not in ENTITY_STOP; compared lower-cased.
"""
import re
import unicodedata

TOKEN_RE = re.compile(r"[A-Za-z0-9]+")
SENT_END_RE = re.compile(r"[.?!]\s")

NEGATION_WORDS = frozenset(
    "not no never nothing nobody none neither nor without cannot cant dont doesnt didnt isnt arent "
    "wasnt werent wont wouldnt shouldnt couldnt havent hasnt hadnt aint".split()
)

# Upper-case words that are not named entities (question words, pronouns, common sentence-initial words
# that QQP users capitalise mid-text, title-case filler).
ENTITY_STOP = frozenset(
    """i a an the what why how when where which who whom whose is are was were do does did can could
    should would will shall may might must has have had be been am if and or but so not no yes
    my me we our you your he she it its they them their this that these those there here
    in on at of for to from by with about as into over after before under between vs
    please any some all one best good new"""
    .split()
)

# Antonym / role pairs for the conflict test (lower-case whole tokens; symmetric).
ANTONYM_PAIRS = [
    ("similar", "different"), ("similarities", "differences"), ("similarity", "difference"),
    ("same", "different"), ("similar", "differ"), ("same", "differ"), ("advantages", "disadvantages"), ("advantage", "disadvantage"),
    ("pros", "cons"), ("best", "worst"), ("better", "worse"), ("good", "bad"),
    ("positive", "negative"), ("buy", "sell"), ("buying", "selling"), ("increase", "decrease"),
    ("before", "after"), ("men", "women"), ("man", "woman"), ("male", "female"),
    ("boy", "girl"), ("boys", "girls"), ("guys", "girls"), ("husband", "wife"),
    ("boyfriend", "girlfriend"), ("father", "mother"), ("son", "daughter"),
    ("cheap", "expensive"), ("cheapest", "expensive"), ("rich", "poor"), ("win", "lose"),
    ("start", "stop"), ("love", "hate"), ("easy", "hard"), ("easiest", "hardest"),
    ("fast", "slow"), ("gain", "lose"), ("high", "low"), ("legal", "illegal"),
    ("true", "false"), ("right", "wrong"), ("success", "failure"), ("learn", "teach"),
    ("import", "export"), ("input", "output"), ("upload", "download"), ("send", "receive"),
    ("min", "max"), ("minimum", "maximum"), ("first", "last"), ("old", "new"),
]
ANTONYMS = {}
for x, y in ANTONYM_PAIRS:
    ANTONYMS.setdefault(x, set()).add(y)
    ANTONYMS.setdefault(y, set()).add(x)

WH_WORDS = frozenset("what why how when where who which".split())

ANTONYM_WORDS = frozenset(ANTONYMS)

STOPWORDS = frozenset(
    """a an the what why how when where which who whom whose is are was were do does did can could
    should would will shall may might must has have had be been being am i me my we our you your he
    she it its they them their this that these those there here in on at of for to from by with
    about as into over after before under between and or but so if then than also just very really
    any some all one get make s t quora""".split()
)


def tokens(s):
    return TOKEN_RE.findall(s)


def sentence_starts(s):
    """Character offsets where a sentence starts: 0 and after each '.', '?', '!' + whitespace."""
    starts = {0}
    for m in SENT_END_RE.finditer(s):
        starts.add(m.end())
    return starts


def fold(s):
    """NFKD, then drop combining marks (Unicode general category M*): 'Zürich' -> 'Zurich'."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.category(c).startswith("M"))


DIGITS_RE = re.compile(r"[0-9]+")
SYMMETRIC_MARKERS = frozenset("between vs versus and or".split())


def analyse(s):
    s = fold(s)
    toks = []  # (orig, lower, start offset)
    for m in TOKEN_RE.finditer(s):
        toks.append((m.group(0), m.group(0).lower(), m.start()))
    low = [t[1] for t in toks]
    # first token of each sentence: the first token whose start >= a sentence-start offset
    starts = sorted(sentence_starts(s))
    first_idx = set()
    j = 0
    for st in starts:
        while j < len(toks) and toks[j][2] < st:
            j += 1
        if j < len(toks):
            first_idx.add(j)
    ents = set()
    for i, (o, l, _) in enumerate(toks):
        if i in first_idx:
            continue
        if "A" <= o[0] <= "Z" and l not in ENTITY_STOP:
            ents.add(l)
    nums = set(DIGITS_RE.findall(s))
    neg = sum(1 for l in low if l in NEGATION_WORDS)
    neg += sum(1 for i in range(1, len(low)) if low[i] == "t" and low[i - 1].endswith("n"))
    first = {}
    for i, l in enumerate(low):
        first.setdefault(l, i)
    return {"low": low, "set": set(low), "nums": nums, "neg": neg, "ents": ents, "first": first}


def pair_features(A, B):
    """A, B: outputs of analyse(). Returns dict of features (a = cached question, b = new question)."""
    sa, sb = A["set"], B["set"]
    ca, cb = sa - STOPWORDS, sb - STOPWORDS
    union = sa | sb
    jac = len(sa & sb) / len(union) if union else 1.0
    cunion = ca | cb
    cjac = len(ca & cb) / len(cunion) if cunion else 1.0
    la, lb = len(A["low"]), len(B["low"])
    lr = min(la, lb) / max(la, lb) if max(la, lb) else 1.0
    na, nb = A["nums"], B["nums"]
    num_diff = bool(na) and bool(nb) and na != nb          # both have numbers, sets differ
    num_one = bool(na) != bool(nb)                           # exactly one side has numbers
    num_any = na != nb                                       # num_diff or num_one
    neg_mis = (A["neg"] > 0) != (B["neg"] > 0)
    ea_only = {e for e in A["ents"] if e not in sb}
    eb_only = {e for e in B["ents"] if e not in sa}
    ent_swap = bool(ea_only) and bool(eb_only)               # each side has an entity the other lacks
    ent_one = bool(ea_only) != bool(eb_only)
    a_only, b_only = sa - sb, sb - sa
    ant = any((ANTONYMS.get(w, set()) & b_only) for w in a_only)
    # content substitution: each side has >=1 content word missing from the other side
    c_swap = bool(ca - cb) and bool(cb - ca)
    c_diff = len(ca ^ cb)
    # role swap: two shared "role" tokens (entities of either side, or antonym-lexicon words) whose
    # first-occurrence order differs; not when either side has a symmetric marker (between/vs/and/or).
    role = sorted(((A["ents"] | B["ents"]) | (ANTONYM_WORDS & sa)) & sa & sb)
    swap = False
    if len(role) >= 2 and not ((sa | sb) & SYMMETRIC_MARKERS):
        fa, fb = A["first"], B["first"]
        for i in range(len(role)):
            for j in range(i + 1, len(role)):
                u, v = role[i], role[j]
                if (fa[u] < fa[v]) != (fb[u] < fb[v]):
                    swap = True
    wa, wb = sa & WH_WORDS, sb & WH_WORDS
    wh_mis = bool(wa) and bool(wb) and wa != wb           # both have wh-words, sets differ
    ca_only, cb_only = len(ca - cb), len(cb - ca)
    long_diff = sum(1 for w in (ca ^ cb) if len(w) >= 7)   # long (rarer) content words on one side only
    return {
        "role_swap": float(swap), "wh_mis": float(wh_mis), "ca_only": float(ca_only), "cb_only": float(cb_only),
        "c_only_max": float(max(ca_only, cb_only)), "c_only_min": float(min(ca_only, cb_only)),
        "long_diff": float(long_diff), "len_min": float(min(la, lb)), "len_max": float(max(la, lb)),
        "jac": jac, "cjac": cjac, "len_ratio": lr,
        "num_diff": float(num_diff), "num_one": float(num_one), "num_any": float(num_any),
        "neg_mis": float(neg_mis), "ent_swap": float(ent_swap), "ent_one": float(ent_one),
        "antonym": float(ant), "c_swap": float(c_swap), "c_diff": float(c_diff),
        "len_a": float(la), "len_b": float(lb),
    }
