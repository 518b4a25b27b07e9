"""`problem_domain(question, default)`: the symbol domain a problem states, for `grade()`.

Symbolic comparison assumes nothing about free symbols (`complex`, so `|x| != x`) unless the
problem says so (issue 15). This reads what the problem text says, by phrase, first rule that
matches wins:

1. ``complex``: "complex", "non-real", "imaginary", ``\\mathbb{C}`` (a problem with complex
   numbers in it keeps nothing assumed, even if it also names a real or positive symbol);
2. ``positive``: "positive"/"nonnegative" + real/integer/number/... ("positive real numbers",
   "positive integers"), "x is positive", "x, y > 0", "0 < x", "x \\ge 0",
   ``\\mathbb{R}^+``, ``\\mathbb{Z}^+``, ``\\mathbb{N}``;
3. ``real``: "real" + number/value/constant/root/solution/... or a variable ("real numbers x",
   "for real x", "real a and b"), "x is real", "x and y are real", "real-valued", an integer
   stated ("n is an integer", "integers a, b"), ``\\mathbb{R}``, ``\\mathbb{Z}``, ``\\mathbb{Q}``;
4. otherwise `default` (verifier.symbol_domain).

Nonnegative counts as positive: sample points of `positive` lie in it.

Limits (what this does not do):
- one domain for every symbol of the answer: "Let n be a positive integer. In terms of x ..."
  grades x as positive too (the phrase does not say which symbol it binds);
- "positive integer" makes symbols positive, not integer (sample points are not integers);
- "real" in unrelated phrases ("the real part of z", "real axis", "non-real roots") is not a
  domain statement: "real part" and "real axis" do not match rule 3 (the noun that follows is
  not in its list) and "non-real" matches rule 1; "positive difference", "positive root",
  "positive x-axis" do not match rule 2;
- only English phrases, small-letter variables (capitals such as "where A, B and C are
  integers" name a form's coefficients, not the answer's symbols) and simple inequalities (a
  lone variable against 0) are read.
"""
from __future__ import annotations

import re

DOMAINS = ("complex", "real", "positive")

# A variable (one small Latin letter: capitals are mostly a form's coefficients, "where A, B, C
# are integers"), optionally subscripted (x, a_1, x_{n}), not the start of a word or a call; a
# lone one, not part of a sum or product (for "x > 0"). A list ("x, y and z are real") matches
# where its variable next to the rest of the rule does, so the rules name that one only: a list
# pattern, searched from each variable of a long list, cost O(length^2).
_VAR = r"(?-i:[a-z])(?:_\{?\w+\}?)?(?![\w(])"
_LONE_BEFORE = r"(?<![\w)}^+\-*/.|])(?<![)}^+\-*/.|=]\s)"
_ARE = r"\s+(?:is|are|be)\s+(?:both\s+|all\s+)?"
_NOT = r"(?<!non-)(?<!non )(?<!not )"
# What "positive" / "real" must describe to be a statement about the problem's quantities.
_POS_NOUNS = (r"(?:real|reals|integers?|rationals?|rational\s+numbers?|numbers?|constants?|parameters?|"
              r"variables?|quantit(?:y|ies)|odd|even)\b")
_REAL_NOUNS = (r"(?:numbers?|values?|constants?|parameters?|variables?|quantit(?:y|ies)|coefficients?|"
               r"roots?|solutions?|zeros?)\b")


def _words(pattern: str) -> re.Pattern:
    """A rule on the problem's words: any case ("Positive", "REAL"); variables stay small letters."""
    return re.compile(pattern, re.IGNORECASE)


_COMPLEX = [
    _words(r"\bcomplex\b(?!\s+fractions?)"),
    _words(r"\bnon-?\s?real\b|\bnot\s+(?:all\s+)?real\b"),
    _words(r"\bimaginary\b"),
]
_COMPLEX_TEX = re.compile(r"\\mathbb\s*(?:\{\s*)?C\b")
_POSITIVE = [
    _words(rf"{_NOT}\b(?:positive|nonnegative|non-negative)\s+{_POS_NOUNS}"),
    _words(rf"\b{_VAR}{_ARE}(?:positive|nonnegative|non-negative|(?:greater|larger) than (?:0|zero))\b"),
    _words(rf"{_LONE_BEFORE}{_VAR}\s*(?:>|\\gt\b|\\geq?\b|\\geqslant\b|>=|≥)\s*0(?![.\d])"),
    _words(rf"(?<![\w.\-^])0\s*(?:<|\\lt\b|\\leq?\b|\\leqslant\b|<=|≤)\s*{_VAR}(?!\s*[-+*/^])"),
]
_POSITIVE_TEX = re.compile(
    r"\\mathbb\s*(?:\{\s*)?(?:[RZQ]\s*(?:\}\s*)?(?:\^\s*(?:\{\s*)?\+|_\s*(?:\{\s*)?(?:\+|>\s*0|\\geq?\s*0))|N\b)")
_REAL = [
    _words(rf"{_NOT}\breal\s+(?:{_REAL_NOUNS}|{_VAR})"),
    _words(rf"\b{_VAR}{_ARE}real\b"),
    _words(r"\breal-valued\b"),
    _words(rf"\b{_VAR}{_ARE}(?:an?\s+)?integers?\b"),
    _words(rf"\bintegers?\s+{_VAR}"),
]
_REAL_TEX = re.compile(r"\\mathbb\s*(?:\{\s*)?[RZQ]\b")
# Math delimiters and spacing dropped before the word rules ("$x$ is real" -> "x is real").
_DELIMS = re.compile(r"\$|\\[()\[\]]|\\[,;!: ]|\\q?quad\b|\\(?:text|mathrm|textbf|emph)\s*")


def problem_domain(question: str | None, default: str = "complex") -> str:
    """The domain of the answer's free symbols that `question` states (module docstring), else
    `default`.

    >>> problem_domain("Let $x$ be a positive real number. Simplify $\\\\sqrt{x^2}$.")
    'positive'
    >>> problem_domain("For real $x$, simplify $\\\\sqrt{x^2}$."), problem_domain("Simplify $\\\\sqrt{x^2}$.")
    ('real', 'complex')
    """
    if not question:
        return default
    tex = question
    text = _DELIMS.sub(" ", question)
    text = re.sub(r"_\{(\w+)\}", r"_\1", text)  # x_{1} -> x_1, then the rest of the braces go
    text = re.sub(r"\s+", " ", re.sub(r"[{}]", " ", text))
    if _COMPLEX_TEX.search(tex) or any(r.search(text) for r in _COMPLEX):
        return "complex"
    if _POSITIVE_TEX.search(tex) or any(r.search(text) for r in _POSITIVE):
        return "positive"
    if _REAL_TEX.search(tex) or any(r.search(text) for r in _REAL):
        return "real"
    return default
