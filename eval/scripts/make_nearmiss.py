#!/usr/bin/env python3
"""Build a near-miss test set from the DUPLICATE pairs of eval/data/qqp_pairs_dev.jsonl.

For a duplicate pair (a, b) we rewrite the new question b into b' so that it asks a DIFFERENT question
than the cached a, while staying lexically almost identical. A semantic cache must NOT serve a's answer
for b'. Perturbation types (at most one edit per pair, first eligible position):

  number      a number token of b that also occurs in a is changed: n -> n+1 (ordinals keep a correct
              suffix: 2nd -> 3rd, 11th -> 12th).
  neg_add     neither a nor b contains a negation; "Why <aux>" in b becomes "Why <aux>n't" (Why is ->
              Why isn't, Why do -> Why don't), else "<aux> <pronoun>" gets a "not" after the pronoun
              (How can I lose weight? -> How can I not lose weight?).
  neg_del     a and b both contain a negation; the first "n't"/" not" is removed from b (not when b has
              "or not").
  entity      b contains a country/city/company/person/product/language name (fixed lists below) that
              also occurs in a; it is replaced with another member of the same list (case style kept).
  antonym     a word of b that also occurs in a and is in the rule's antonym list is replaced by its
              antonym (in-list: optimistic for rules that use that list).
  antonym_ho  same with a HELD-OUT antonym list that no rule uses (fair test of generalisation).
  role_swap   b has no between/vs/versus/and/or; two words of b that are antonyms of each other (either
              list) or two listed entities of the same category (not persons), both also in a and not adjacent (x/y), swap places ("What do guys like in
              girls?" -> "What do girls like in guys?").

Output: JSON lines {"type", "a", "b", "b_orig"} (a = cached question, b = perturbed new question),
at most --per-type pairs per type (random sample, seed 0).
Usage: python eval/scripts/make_nearmiss.py [--out eval/data/qqp_nearmiss_dev.jsonl]
"""
import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_features import ANTONYM_PAIRS, analyse  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

AUX_NEG = {"is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "do": "don't",
           "does": "doesn't", "did": "didn't", "can": "can't", "could": "couldn't",
           "should": "shouldn't", "would": "wouldn't", "will": "won't", "has": "hasn't",
           "have": "haven't"}

ENTITY_LISTS = {
    "country": "India China USA America Pakistan Canada Australia Germany France Japan Russia Brazil "
               "Italy Spain Mexico Singapore Israel Iran Iraq Nepal Bangladesh Sweden Norway Ireland "
               "Switzerland Netherlands Korea Turkey Egypt Nigeria Kenya Indonesia Malaysia Thailand".split(),
    "city": "Delhi Mumbai Bangalore Chennai Hyderabad Pune Kolkata London Paris Tokyo Berlin Sydney "
            "Toronto Chicago Boston Seattle Dubai Singapore Amsterdam Dublin Melbourne Vancouver".split(),
    "company": "Google Facebook Microsoft Apple Amazon Netflix Uber Infosys TCS Wipro Flipkart Samsung "
               "Twitter Yahoo IBM Oracle Intel Accenture Cognizant Tesla Snapchat Instagram LinkedIn "
               "WhatsApp Quora Reddit Airbnb Paytm Jio Airtel Vodafone".split(),
    "person": "Trump Obama Clinton Hillary Modi Kejriwal Gandhi Putin Einstein Newton Musk Zuckerberg "
              "Jobs Gates Bush Lincoln Sanders Nehru Hitler Shakespeare".split(),
    "product": "iPhone Android Windows Linux Ubuntu Mac iPad Kindle PlayStation Xbox Chrome Firefox "
               "Excel Photoshop WordPress".split(),
    "language": "Python Java JavaScript Ruby PHP Swift Kotlin Perl Scala Haskell MATLAB Rust".split(),
    "subject": "physics chemistry biology mathematics economics history psychology philosophy "
               "sociology geography".split(),
}

# Held-out antonyms: none of these words is in cache_features.ANTONYM_PAIRS.
HELDOUT_ANTONYMS = [
    ("more", "less"), ("most", "least"), ("long", "short"), ("big", "small"), ("large", "small"),
    ("strong", "weak"), ("happy", "sad"), ("open", "close"), ("public", "private"),
    ("online", "offline"), ("internal", "external"), ("inside", "outside"), ("top", "bottom"),
    ("early", "late"), ("north", "south"), ("east", "west"), ("hot", "cold"), ("safe", "dangerous"),
    ("healthy", "unhealthy"), ("possible", "impossible"), ("add", "remove"), ("accept", "reject"),
    ("enable", "disable"), ("rise", "fall"), ("up", "down"), ("pass", "fail"), ("highest", "lowest"),
    ("love", "hate"), ("friends", "enemies"), ("friend", "enemy"),
    ("like", "dislike"), ("agree", "disagree"), ("employee", "employer"), ("student", "teacher"),
    ("students", "teachers"), ("parents", "children"), ("mom", "dad"), ("brother", "sister"),
    ("king", "queen"), ("hire", "fire"), ("attack", "defend"), ("winter", "summer"),
    ("morning", "night"), ("past", "future"), ("ancient", "modern"), ("beginner", "expert"),
]
_rule_words = {w for p in ANTONYM_PAIRS for w in p}
HELDOUT_ANTONYMS = [p for p in HELDOUT_ANTONYMS if p[0] not in _rule_words and p[1] not in _rule_words]


def pair_map(pairs):
    m = {}
    for x, y in pairs:
        m.setdefault(x, y)
        m.setdefault(y, x)
    return m


def keep_case(src, repl):
    if src.isupper() and len(src) > 1:
        return repl.upper()
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl.lower() if src.islower() else repl


def ordinal(n):
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


NUM_RE = re.compile(r"(?<![A-Za-z0-9.,])(\d{1,6})(st|nd|rd|th)?(?![A-Za-z0-9]|[.,]\d)")
WORD_RE = re.compile(r"[A-Za-z0-9]+")


def perturb_number(a, b):
    anums = analyse(a)["nums"]
    for m in NUM_RE.finditer(b):
        if m.group(1) not in anums:
            continue
        n = int(m.group(1)) + 1
        new = str(n) + (ordinal(n) if m.group(2) else "")
        return b[: m.start()] + new + b[m.end():]
    return None


PRONOUNS = {"i", "you", "we", "they", "he", "she", "it", "one"}


def perturb_neg_add(a, b):
    """'Why is/do/can ...' -> 'Why isn't/don't/can't ...'; else '<aux> <pronoun>' -> '<aux> <pronoun> not'
    ('How can I lose weight?' -> 'How can I not lose weight?')."""
    if analyse(a)["neg"] or analyse(b)["neg"]:
        return None
    ws = list(WORD_RE.finditer(b))
    for i in range(len(ws) - 1):
        w0, w1 = ws[i].group(0), ws[i + 1].group(0)
        if w0.lower() == "why" and w1.lower() in AUX_NEG:
            m = ws[i + 1]
            return b[: m.start()] + keep_case(w1, AUX_NEG[w1.lower()]) + b[m.end():]
    for i in range(len(ws) - 2):
        w0, w1 = ws[i].group(0), ws[i + 1].group(0)
        if w0.lower() in AUX_NEG and w1.lower() in PRONOUNS:
            m = ws[i + 1]
            return b[: m.end()] + " not" + b[m.end():]
    return None


NEG_DEL_RE = re.compile(r"\b(\w+)n['\u2019]t\b|\s+not\b", re.I)
CONTRACTION_UNDO = {"ca": "can", "wo": "will", "sha": "shall"}


def perturb_neg_del(a, b):
    if not analyse(a)["neg"]:
        return None
    m = NEG_DEL_RE.search(b)
    if not m or re.search(r"\bor\s+not\b", b, re.I):  # 'whether ... or not' carries no meaning
        return None
    if m.group(1):
        stem = m.group(1)
        stem = keep_case(stem, CONTRACTION_UNDO.get(stem.lower(), stem))
        return b[: m.start()] + stem + b[m.end():]
    return b[: m.start()] + b[m.end():]


ENT_INDEX = {}
for cat, names in ENTITY_LISTS.items():
    for nm in names:
        ENT_INDEX.setdefault(nm.lower(), (cat, nm))


def perturb_entity(a, b, rng):
    alow = set(analyse(a)["low"])
    for m in WORD_RE.finditer(b):
        w = m.group(0)
        lw = w.lower()
        if lw in ENT_INDEX and lw in alow:
            cat, _ = ENT_INDEX[lw]
            blow = set(analyse(b)["low"])
            choices = [x for x in ENTITY_LISTS[cat] if x.lower() not in alow and x.lower() not in blow]
            repl = rng.choice(choices)
            rep = repl if (w[:1].isupper() or cat != "subject") else repl.lower()
            if w.islower():
                rep = repl.lower()
            return b[: m.start()] + rep + b[m.end():]
    return None


def perturb_antonym(a, b, amap):
    alow = set(analyse(a)["low"])
    for m in WORD_RE.finditer(b):
        w = m.group(0)
        lw = w.lower()
        if lw in amap and lw in alow:
            return b[: m.start()] + keep_case(w, amap[lw]) + b[m.end():]
    return None


SYM = {"between", "vs", "versus", "and", "or"}


def perturb_role_swap(a, b, amap_all):
    """Swap two words of b that are antonyms of each other (either list) or two listed entities of the
    same category, both also occurring in a: 'What do guys like in girls?' -> 'What do girls like in
    guys?'. Not when a or b contains between/vs/versus/and/or (symmetric constructions)."""
    alow = set(analyse(a)["low"])
    blow = set(analyse(b)["low"])
    if (alow | blow) & SYM:
        return None
    ms = [m for m in WORD_RE.finditer(b) if m.group(0).lower() in alow]
    for i in range(len(ms)):
        for j in range(i + 1, len(ms)):
            x, y = ms[i].group(0).lower(), ms[j].group(0).lower()
            if x == y:
                continue
            same_ent = (x in ENT_INDEX and y in ENT_INDEX and ENT_INDEX[x][0] == ENT_INDEX[y][0]
                        and ENT_INDEX[x][0] != "person")  # persons: first/last names of one person
            between = b[ms[i].end(): ms[j].start()]
            if (amap_all.get(x) == y or same_ent) and WORD_RE.search(between):
                m1, m2 = ms[i], ms[j]
                w1, w2 = m1.group(0), m2.group(0)
                return (b[: m1.start()] + keep_case(w1, w2) + b[m1.end(): m2.start()]
                        + keep_case(w2, w1) + b[m2.end():])
    return None


ROLE_WORDS = set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "eval/data/qqp_pairs_dev.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "eval/data/qqp_nearmiss_dev.jsonl"))
    ap.add_argument("--per-type", type=int, default=1500)
    args = ap.parse_args()
    rng = random.Random(0)
    dups = [r for r in map(json.loads, open(args.data, encoding="utf-8")) if r["duplicate"]]
    amap_rule = pair_map(ANTONYM_PAIRS)
    amap_ho = pair_map(HELDOUT_ANTONYMS)
    amap_all = dict(amap_ho)
    amap_all.update(amap_rule)
    gens = {
        "number": lambda a, b: perturb_number(a, b),
        "neg_add": lambda a, b: perturb_neg_add(a, b),
        "neg_del": lambda a, b: perturb_neg_del(a, b),
        "entity": lambda a, b: perturb_entity(a, b, rng),
        "antonym": lambda a, b: perturb_antonym(a, b, amap_rule),
        "antonym_ho": lambda a, b: perturb_antonym(a, b, amap_ho),
        "role_swap": lambda a, b: perturb_role_swap(a, b, amap_all),
    }
    out = []
    for typ, g in gens.items():
        rows = []
        for r in dups:
            nb = g(r["a"], r["b"])
            if nb and nb != r["b"]:
                rows.append({"type": typ, "a": r["a"], "b": nb, "b_orig": r["b"]})
        n_all = len(rows)
        rng2 = random.Random(sum(map(ord, typ)))
        if len(rows) > args.per_type:
            rows = rng2.sample(rows, args.per_type)
        print(f"{typ:11s} eligible {n_all:6d}  kept {len(rows)}")
        out.extend(rows)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print("wrote", args.out, len(out))


if __name__ == "__main__":
    main()
