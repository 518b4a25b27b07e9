"""Are two answer texts mathematically equivalent? math-verify 0.9.0 plus fixes.

Order of checks (cheapest first, each a definitive answer for what it covers):
1. identical normalised text (`normalize.normalize`);
2. containers: sets / lists compare unordered, tuples / intervals ordered, and a tuple or
   interval `(1,2)` is never the set `\\{1,2\\}` (math-verify says it is);
3. exact number literals compared exactly as fractions (math-verify rounds to 6 places
   and chops, so `0.0000001 == 0.0000002` and `1/2^{99} == 1/2^{98}` for it);
4. inputs too costly to evaluate (`risky`): text equality only;
5. math-verify `parse` / `verify` (gold first), then:
   - `i` becomes the imaginary unit when the gold has no other free symbol,
   - closed-form numbers are compared exactly at 50 digits (decimal approximations of
     irrational / non-terminating values need `approx_min_sig_digits` digits),
   - relations vs sets (`1\\le x\\le 2` vs `[1,2]`) and expressions equal at sample points of
     `verifier.symbol_domain` (default `complex`: nothing assumed, so `|x| != x`, while
     `\\sqrt{1/n}` vs `\\frac{1}{\\sqrt n}` holds on principal branches) are rescued;
     math-verify's own "equal" (it parses every symbol as real) is overruled when the two
     differ at such points;
6. two equations (one top-level `=` each) are equal when (lhs - rhs) of one is a nonzero
   constant multiple of the other's (`y = 2x + 1` vs `2x - y + 1 = 0`), tried first.

Everything here may be slow or hang on adversarial input: run it under a hard deadline
(verifier.worker); `grade()` itself never stringifies a sympy object.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

from verifier.normalize import (Container, Literal, container, equation, normalize,
                                parse_literal, terminates)

logging.getLogger("math_verify").setLevel(logging.ERROR)

_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z '\-]*[A-Za-z]$")
_BIG_NUM_RE = re.compile(r"\d{4,}")
# Commands a plain number may hold (`(3 \cdot 3)`), and layout ones that are skipped (`\left(`).
_NUMBER_OPS = frozenset(("cdot", "times", "div"))
_LAYOUT = frozenset(("left", "right", "bigl", "bigr", "Bigl", "Bigr", ",", ";", ":", "!", " "))


def _power_tower(s: str) -> bool:
    """A number raised to a power inside an exponent (`9^{9^{9^9}}`, `2^{2^{36}}`, `2^{(3+6)^9}`)
    or an integer of 6+ digits in an exponent (`2^{1000000}`), however the exponent is braced,
    parenthesised or spaced (`9^{{9^{{9^{9}}}}}`, `9^{ (9) ^ {9} }`): a regex on the text let
    an extra brace hide a tower. One pass, a stack of open groups."""
    groups: list[list[bool]] = []  # per open group: [is an exponent, holds only numbers so far]
    in_exp = 0  # open groups that are exponents
    num = num_in_exp = False  # the item just before: a number? inside (or itself) an exponent?
    exp_next = False  # the next item is a `^`'s exponent
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
            continue
        if c == "^":
            if s[i + 1:i + 17].replace(" ", "").lstrip("{").startswith(("\\circ", "\\prime")):
                i += 1  # `2^{10}^\circ`: a degree or prime mark, not a power
                continue
            if num and num_in_exp:
                return True
            exp_next, num = True, False
            i += 1
            continue
        is_exp, exp_next = exp_next, False
        if c in "{([":
            groups.append([is_exp, True])
            in_exp += is_exp
            num = False
            i += 1
        elif c in "})]":
            if groups:
                was_exp, numeric = groups.pop()
                in_exp -= was_exp
                if groups:
                    groups[-1][1] = groups[-1][1] and numeric
                num, num_in_exp = numeric, was_exp or in_exp > 0
            else:
                num = False
            i += 1
        elif c.isdecimal() or (c == "." and i + 1 < n and s[i + 1].isdecimal()):
            j = i
            while j < n and s[j].isdecimal():
                j += 1
            if (is_exp or in_exp) and j - i >= 6:
                return True
            if j < n and s[j] == ".":  # a fractional part: its length says nothing of the size
                j += 1
                while j < n and s[j].isdecimal():
                    j += 1
            num, num_in_exp = True, is_exp or in_exp > 0
            i = j
        elif c == "\\":
            j = i + 1
            while j < n and s[j].isascii() and s[j].isalpha():
                j += 1
            j = max(j, min(i + 2, n))  # `\,`, `\{`: one character
            name = s[i + 1:j]
            if name in _LAYOUT:
                exp_next = is_exp  # `^\left(`: the group is still the exponent
            elif name in _NUMBER_OPS:
                num = False
            else:
                num = False
                if groups:
                    groups[-1][1] = False
            i = j
        else:
            if c in "+-" and is_exp:
                exp_next = True  # `^-9`: the sign belongs to the exponent
            elif c != "!":  # `3!` is still a number
                num = False
                if c not in "+-*/" and groups:
                    groups[-1][1] = False
            i += 1
    return False


def _big_factorial(s: str) -> bool:
    """A factorial of a literal >= 1000 or of a group holding a power: `(10^6)!`."""
    for i, c in enumerate(s):
        if c == "!":
            before = s[max(0, i - 40):i].rstrip()
            if _BIG_NUM_RE.search(before[-5:]) or (before.endswith((")", "}")) and (
                    "^" in before or _BIG_NUM_RE.search(before))):
                return True
    return False


def _nested_factorial(s: str) -> bool:
    """Factorials in a row (`3!!`, `1!!!`) or a factorial of a group that holds one
    (`((3)!)!`): each level is a factorial of a factorial, too big to evaluate after two, and
    sympy's evalf of a long chain is quadratic (`1` and 200 `!` took 12 s). `n!!` is also the
    double factorial, which the parser reads as `(n!)!` (`3!!` came out 720, not 3), so it is
    compared as text too. One pass."""
    run, inner_bang, prev = 0, False, ""
    stack = [False]  # per open group: holds a `!`
    for c in s:
        if c.isspace():
            continue
        if c == "!":
            run = run + 1 if prev == "!" else 1
            if run >= 2 or (prev in ")}]" and inner_bang):
                return True
            stack[-1] = True
        elif c in "({[":
            stack.append(False)
        elif c in ")}]":
            inner_bang = stack.pop() if len(stack) > 1 else False
            stack[-1] = stack[-1] or inner_bang
        prev = c
    return False


_MAX_ITEMS = 24


def risky(s: str) -> str | None:
    """Why `s` is too costly to evaluate symbolically (None when it is fine).

    >>> risky("9^{9^{9^9}}"), risky("9^{ {9}^{(9)^{9}} }"), risky("(2^3)^4")
    ('power tower', 'power tower', None)
    """
    if "^" in s and _power_tower(s):
        return "power tower"
    if "!" in s and (_big_factorial(s) or _nested_factorial(s)):
        return "large factorial"
    return None


def equivalent(gold: str, pred: str, approx_min_sig_digits: int = 6,
               domain: str = "complex") -> tuple[bool, str | None]:
    """(equivalent?, note) for two raw answer texts; gold first (the check is asymmetric).

    `domain` (verifier.symbol_domain: complex, real or positive) is what free symbols may be."""
    g, p = normalize(gold), normalize(pred)
    eg, ep = equation(gold), equation(pred)
    if eg and ep and not any(risky(x) for x in (gold, pred, *eg, *ep)):
        from verifier import symbolic

        if symbolic.equations_equal(eg, ep, domain):
            return True, "same equation rearranged"
    ok, note = _equiv(g, p, approx_min_sig_digits, domain)
    if not ok and "%" in gold and "%" not in pred:  # gold 8\% vs 0.08
        lg, lp = parse_literal(g), parse_literal(p)
        if lg is not None and lp is not None and lp.value == lg.value / 100:
            return True, "percent as a fraction"
    return ok, note


def _equiv(g: str, p: str, sig: int, domain: str = "complex") -> tuple[bool, str | None]:
    if g == p:
        return True, None
    cg, cp = container(g), container(p)
    if cg.kind != "single" and cp.kind != "single":
        return _equiv_containers(cg, cp, sig, domain)
    if cg.kind == "single" and cp.kind == "single":
        return _equiv_single(g, p, sig, domain=domain)
    return _equiv_single(g, p, sig, allow_literals=False, domain=domain)  # e.g. \mathbb{R} vs (-\infty,\infty)


def _equiv_containers(cg: Container, cp: Container, sig: int,
                      domain: str) -> tuple[bool, str | None]:
    unordered = {"set", "list"}
    if len(cg.items) != len(cp.items):
        return False, "different number of answers"
    if len(cg.items) > _MAX_ITEMS:
        return sorted(cg.items) == sorted(cp.items), "too many items: text comparison"
    if cg.kind in unordered and cp.kind in unordered:
        return _match_unordered(list(cg.items), list(cp.items), sig, domain)
    same_brackets = cg.kind == cp.kind and (cg.left, cg.right) == (cp.left, cp.right)
    if same_brackets or (cg.kind == "paren" and cp.kind == "list"):
        for a, b in zip(cg.items, cp.items):
            ok, note = _equiv(a, b, sig, domain)
            if not ok:
                return False, note
        return True, None
    return False, f"{cg.kind} answer vs {cp.kind} answer"


def _match_unordered(gold: list[str], pred: list[str], sig: int,
                     domain: str) -> tuple[bool, str | None]:
    remaining = list(pred)
    for a in gold:
        for j, b in enumerate(remaining):
            if _equiv(a, b, sig, domain)[0]:
                del remaining[j]
                break
        else:
            return False, "an answer is missing"
    return True, None


def literals_equal(g: Literal, p: Literal, sig: int) -> bool:
    """Exact, except that a decimal may approximate a non-terminating value (see module)."""
    if g.value == p.value:
        return True
    if p.decimals is not None and not terminates(g.value):
        return p.sig_digits >= sig and abs(p.value - g.value) * 10 ** p.decimals < 1
    if g.decimals is not None and not terminates(p.value):
        return abs(g.value - p.value) * 10 ** g.decimals * 2 <= 1
    return False


def _equiv_single(g: str, p: str, sig: int, allow_literals: bool = True,
                  domain: str = "complex") -> tuple[bool, str | None]:
    lg, lp = parse_literal(g), parse_literal(p)
    if lg is not None and lp is not None:
        return literals_equal(lg, lp, sig), None
    if _WORDS_RE.match(g) and _WORDS_RE.match(p):
        return g.lower() == p.lower(), None
    reason = risky(g) or risky(p)
    if reason:
        return False, f"{reason}: compared as text only"
    from verifier import symbolic  # imports sympy / math-verify lazily

    return symbolic.equivalent(g, p, lg, lp, sig, domain)
