"""String-level normalisation of answers, exact number literals and top-level splitting.

All functions are pure, linear-time string code: they run before anything is parsed by
sympy, so they also fix what math-verify 0.9.0 mis-parses (`\\mathrm{e}`, `\\varnothing`,
`0.\\overline{3}`, `1\\le x\\le 2`, units, thousands separators, `x=3`).

>>> normalize("x = 10{,}080\\\\text{ cm}^2")
'10080'
>>> normalize("1\\\\le x\\\\le 2")
'[1,2]'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Unit words stripped after a number when written out plainly (after a space); any unit
# inside \text{} / \mbox{} / \mathrm{} after a number is stripped too. Single letters
# (m, s, g) only count inside \text{...}: a bare `2 m` may be an expression.
_UNIT_WORDS = (
    "cm|mm|km|meters?|metres?|centimeters?|kilometers?|inch(?:es)?|feet|foot|ft|yards?|"
    "miles?|mph|units?|square|sq|cubic|degrees?|deg|radians?|rad|seconds?|sec|minutes?|min|"
    "hours?|hrs?|days?|weeks?|months?|years?|dollars?|cents?|pounds?|lbs?|ounces?|oz|"
    "grams?|kg|mg|liters?|litres?|ml|gallons?|people|persons?|students?|ways?|"
    "times|points?|percent|pages?|books?|apples?|marbles?|eggs?|coins?|steps?|items?"
)
# Every run of spaces / spacing commands has one way to match (`(?:\s|...)+`, not `(?:\s+|...)+`,
# whose nested repeats backtracked 2^k ways on k spaces): linear in the answer.
_TRAILING_UNIT_RE = re.compile(
    r"^(?P<val>.*?[\d}).])(?:\s*(?:(?:\\[,;!: ]|~)+\s*)?(?:\\(?:text|mbox|mathrm|textrm|rm)\s*\{[^{}]*\})"
    rf"|(?:\s|\\[,;!: ]|~)+(?:{_UNIT_WORDS})\b)(?:\s*+(?:\^\s*\{{?\d\}}?|\^\\circ))?\s*+$")
_SPACE_CMDS_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|~")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree")
_PERCENT_RE = re.compile(r"\\%|%|\\text\{\s*percent\s*\}")
_EULER_RE = re.compile(r"\\(?:mathrm|text|operatorname|mathit|rm)\s*\{\s*e\s*\}")
# From the point on (a search from each digit of a long number would rescan it: quadratic);
# `_overlines` adds the sign and the digits before the point.
_OVERLINE_RE = re.compile(r"\.(\d*)\\overline\s*(?:\{\s*)?(\d+)\s*\}?")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_ASSIGN_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?(?:\([^()=]*\))?\s*=\s*(?P<rhs>[^=<>]+)$")
_CHOICE_RE = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?$")
# `(?<!\s)\s*`: tried where a run of spaces starts, not again from each of its spaces (quadratic).
_WORD_SEP_RE = re.compile(r"(?<!\s)\s*(?:\\text\{\s*(?:and|or)\s*\}|\\(?:text|mbox)\{\s*(?:,\s*)?(?:and|or)\s*\}"
                          r"|\s(?:and|or)\s)\s*")
_REL = r"(?:\\le(?:q|qslant)?|\\ge(?:q|qslant)?|<|>|\\lt|\\gt|≤|≥)"
_CHAIN_RE = re.compile(rf"^(?P<a>[^<>=]*?)(?<!\s)\s*(?P<r1>{_REL})\s*(?P<v>[A-Za-z])\s*"
                       rf"(?P<r2>{_REL})\s*(?P<b>.+)$")
_ONE_SIDED_RE = re.compile(rf"^(?P<v>[A-Za-z])\s*(?P<r>{_REL})\s*(?P<b>.+)$")


def _rel_kind(r: str) -> tuple[str, bool]:
    """('<' or '>', strict?) for one relation token."""
    lt = r.startswith(("<", "\\lt", "\\le", "≤"))
    strict = r in ("<", ">", "\\lt", "\\gt")
    return ("<" if lt else ">"), strict


def inequality_to_interval(s: str) -> str:
    """`1\\le x\\le 2` -> `[1,2]`, `x>3` -> `(3,\\infty)`; other strings unchanged."""
    if "\\le" not in s and "\\ge" not in s and "<" not in s and ">" not in s and "\\lt" not in s \
            and "\\gt" not in s and "≤" not in s and "≥" not in s:
        return s
    m = _CHAIN_RE.match(s)
    if m:
        (k1, s1), (k2, s2) = _rel_kind(m["r1"]), _rel_kind(m["r2"])
        a, b = m["a"].strip(), m["b"].strip()
        if k1 == k2 == "<" and a and b:
            return f"{'(' if s1 else '['}{a},{b}{')' if s2 else ']'}"
        if k1 == k2 == ">" and a and b:
            return f"{'(' if s2 else '['}{b},{a}{')' if s1 else ']'}"
        return s
    m = _ONE_SIDED_RE.match(s)
    if m and not re.search(_REL, m["b"]):
        kind, strict = _rel_kind(m["r"])
        b = m["b"].strip()
        if kind == "<":
            return f"(-\\infty,{b}{')' if strict else ']'}"
        return f"{'(' if strict else '['}{b},\\infty)"
    return s


def _overline_to_frac(sign: str, whole: str, fixed: str, rep: str) -> str:
    whole = whole or "0"
    value = Fraction(int(whole + fixed + rep) - int(whole + fixed or "0"),
                     (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _overlines(s: str) -> str:
    """`0.\\overline{3}` -> `\\frac{1}{3}`, `-1.2\\overline{34}` -> `-\\frac{611}{495}`: what
    `re.sub(r"(-?)(\\d*)\\.(\\d*)\\overline...")` gives, in one pass (the digits before the point
    are read backwards from it, never past the previous match)."""
    if "\\overline" not in s:
        return s
    out, pos = [], 0
    for m in _OVERLINE_RE.finditer(s):
        start = m.start()
        while start > pos and s[start - 1].isdecimal():
            start -= 1
        whole = s[start:m.start()]
        sign = "-" if start > pos and s[start - 1] == "-" else ""
        out.append(s[pos:start - len(sign)])
        out.append(_overline_to_frac(sign, whole, m.group(1), m.group(2)))
        pos = m.end()
    out.append(s[pos:])
    return "".join(out)


def normalize(s: str, strip_assignment: bool = True) -> str:
    """Canonical text of one answer (deterministic; never raises). `strip_assignment=False`
    keeps `y = ...` whole (and skips the inequality rewrite)."""
    s = s.strip().strip("$").strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left):-len(right)].strip()
    s = s.replace("\\displaystyle", "").replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("\\varnothing", "\\emptyset").replace("\\{\\}", "\\emptyset")
    s = s.replace("\\$", "").replace("\\cdot", "\\cdot ")
    s = _EULER_RE.sub("e", s)
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_RE.sub("", s)
    s = _overlines(s)
    s = _SPACE_CMDS_RE.sub(" ", s).strip().rstrip(".")
    for _ in range(2):
        m = _TRAILING_UNIT_RE.match(s)
        if m and m["val"].strip():
            s = m["val"]
    s = s.strip().rstrip(".").strip()
    inner = _TEXT_WRAP_RE.fullmatch(s)
    if inner:  # the whole answer is \text{...}
        s = inner.group(1).strip()
    m = _CHOICE_RE.match(s)
    if m:
        return m.group(1).upper()
    s = re.sub(r"\s+", " ", s)
    if _THOUSANDS_RE.match(s.replace(" ", "")):
        s = s.replace(",", "").replace(" ", "")
    if not strip_assignment:
        return s
    m = _ASSIGN_RE.match(s)
    if m:
        s = m["rhs"].strip()
    return inequality_to_interval(s)


_NOT_EQUATION_RE = re.compile(rf"{_REL}|\\ne(?:q)?\b|\\approx|\\equiv|\\Rightarrow|\\iff|"
                              r"\\text|\\mbox|\\pm|\\mp")


def equation(s: str) -> tuple[str, str] | None:
    """(lhs, rhs) when the answer is one equation (`y = 2x + 1`, `2x - y + 1 = 0`): exactly one
    `=`, outside any bracket, no other relation, not a list; None otherwise.

    >>> equation("y = 2x + 1")
    ('y', '2x + 1')
    """
    s = normalize(s, strip_assignment=False)
    if s.count("=") != 1 or _NOT_EQUATION_RE.search(s) or container(s).kind != "single":
        return None
    sides = split_top_level(s, "=")
    if len(sides) != 2 or not all(sides):
        return None
    return sides[0], sides[1]


# --------------------------------------------------------------------------- literals
@dataclass(frozen=True)
class Literal:
    """An exactly known number written out: `value` is exact; `decimals` is the number of
    digits after the point for a decimal literal (None for integers / fractions)."""

    value: Fraction
    decimals: int | None = None
    sig_digits: int = 0


_INT_RE = re.compile(r"^[-+]?\d+$")
_DEC_RE = re.compile(r"^([-+]?)(\d*)\.(\d+)$")
_SCI_RE = re.compile(r"^([-+]?\d*\.?\d+)\s*(?:e|E|\\times\s*10\s*\^|\\cdot\s*10\s*\^|\*\s*10\s*\^)"
                     r"\s*\{?\s*([-+]?\d{1,3})\s*\}?$")
_FRAC_RE = re.compile(r"^([-+]?)\\frac\s*(?:\{\s*([-+]?\d+)\s*\}|(\d))\s*(?:\{\s*([-+]?\d+)\s*\}|(\d))$")
_SLASH_RE = re.compile(r"^([-+]?\d+)\s*/\s*([-+]?\d+)$")


def parse_literal(s: str) -> Literal | None:
    """Exact value of a plain number (integer, decimal, fraction, scientific), else None.

    >>> parse_literal("\\\\frac12").value
    Fraction(1, 2)
    >>> parse_literal("0.0000001").decimals
    7
    """
    s = s.strip().replace(" ", "")
    if len(s) > 400:
        return None
    if _INT_RE.match(s):
        return Literal(Fraction(int(s)))
    m = _DEC_RE.match(s)
    if m:
        digits = (m.group(2) + m.group(3)).lstrip("0")
        return Literal(Fraction(s), decimals=len(m.group(3)), sig_digits=len(digits))
    m = _FRAC_RE.match(s)
    if m:
        num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
        if den == 0:
            return None
        return Literal(Fraction(num, den) * (-1 if m.group(1) == "-" else 1))
    m = _SLASH_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Literal(Fraction(int(m.group(1)), int(m.group(2))))
    m = _SCI_RE.match(s)
    if m:
        mant = parse_literal(m.group(1))
        if mant is None:
            return None
        exp = int(m.group(2))
        dec = mant.decimals or 0
        return Literal(mant.value * Fraction(10) ** exp, decimals=max(dec - exp, 0) if dec or exp < 0
                       else None, sig_digits=mant.sig_digits or len(m.group(1).lstrip("-+0")))
    return None


def terminates(x: Fraction) -> bool:
    """True when x has a finite decimal expansion (denominator 2^a 5^b)."""
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


# --------------------------------------------------------------------------- splitting
_OPEN, _CLOSE = "([{", ")]}"


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside any bracket/brace (`\\{`, `\\}` count as braces)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def nesting_depth(s: str) -> int:
    """Maximum bracket/brace nesting depth (a cheap guard before any parser sees `s`)."""
    depth = best = 0
    for c in s:
        if c in _OPEN:
            depth += 1
            best = max(best, depth)
        elif c in _CLOSE:
            depth -= 1
    return best


def _wrapped(s: str, left: str, right: str) -> bool:
    """True when s = left + X + right with the outer pair matching each other."""
    if not (s.startswith(left) and s.endswith(right)) or len(s) < len(left) + len(right):
        return False
    inner = s[len(left):len(s) - len(right)]
    return nesting_depth_balanced(inner)


def nesting_depth_balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            if depth < 0:
                return False
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


@dataclass(frozen=True)
class Container:
    """How an answer groups several values: kind is 'set' (`\\{..\\}`), 'paren' / 'bracket'
    / 'half' (a tuple or interval: `(..)`, `[..]`, `(..]` / `[..)`), 'list' (bare commas or
    "and"/"or"), or 'single'. `items` are the top-level element texts."""

    kind: str
    items: tuple[str, ...]
    left: str = ""
    right: str = ""


def container(s: str) -> Container:
    """Classify the top-level grouping of a normalised answer."""
    if _wrapped(s, "\\{", "\\}"):
        return Container("set", tuple(split_top_level(s[2:-2])))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and nesting_depth_balanced(s[1:-1]):
        items = split_top_level(s[1:-1])
        if len(items) >= 2:
            kind = {"()": "paren", "[]": "bracket"}.get(s[0] + s[-1], "half")
            return Container(kind, tuple(items), s[0], s[-1])
    items = split_top_level(s)
    if len(items) == 1:
        items = [p for p in _WORD_SEP_RE.split(s) if p.strip()]
    if len(items) == 1 and s.count("\\pm") == 1 and "\\mp" not in s and nesting_depth(s) <= 1:
        items = [s.replace("\\pm", "+"), s.replace("\\pm", "-")]
    if len(items) >= 2:
        return Container("list", tuple(i.strip() for i in items))
    return Container("single", (s,))
