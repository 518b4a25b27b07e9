"""The sympy / math-verify half of `equivalence` (imported lazily: it costs ~1.5 s).

Runs only inside a grading process under a hard deadline. math-verify's own
`signal.alarm` timeouts are switched off (`parsing_timeout=None`, `timeout_seconds=None`).
Parsed objects never leave this module; only booleans and short notes do.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import mpmath
import sympy
from math_verify import LatexExtractionConfig, parse, verify
from sympy import Basic, I, MatrixBase, Rational, Symbol

logging.getLogger("math_verify").setLevel(logging.ERROR)

from verifier.normalize import Literal

_SAMPLE_POINTS = (Rational(13, 10), Rational(27, 11), Rational(7, 19), Rational(31, 7))
_PREC = 50
_MAX_PREC = 1_100  # digits: values beyond 10^1050 are not compared numerically
_TOL_EXP = -30


# LaTeX extraction only: math-verify's plain-expression fallback picks any number out of
# an answer it cannot parse (`\hbar\omega(v+1/2)` became `2`), a wrong "correct".
_LATEX_ONLY = [LatexExtractionConfig()]


def _parse(s: str):
    """math-verify parse of one normalised answer (a list: [sympy object, text] or [])."""
    return parse("$" + s + "$", extraction_config=_LATEX_ONLY, parsing_timeout=None)


@lru_cache(maxsize=4096)
def _parse_gold(s: str):  # K samples per query share one gold: parse it once
    return _parse(s)


def _first_sympy(parsed):
    for x in parsed:
        if isinstance(x, (Basic, MatrixBase)):
            return x
    return None


def _imaginary_fix(g, p):
    """Treat the symbol `i` as the imaginary unit when the gold has no other free symbol."""
    try:
        g_syms, p_syms = g.free_symbols, p.free_symbols
    except AttributeError:
        return g, p
    # latex2sympy gives `i` different assumptions on each side: match it by name
    if all(s.name == "i" for s in g_syms) and any(s.name == "i" for s in g_syms | p_syms):
        g = g.subs({s: I for s in g_syms})
        p = p.subs({s: I for s in p_syms if s.name == "i"})
    return g, p


def _is_plain_number(x) -> bool:
    return isinstance(x, sympy.Expr) and not isinstance(x, MatrixBase) and x.is_number


def _exact_value(x, lit: Literal | None):
    return Rational(lit.value.numerator, lit.value.denominator) if lit is not None else x


def _magnitude_digits(x) -> int | None:
    """floor(log10 |x|) of a closed-form number (None when not a finite number)."""
    v = sympy.Abs(x).evalf(15)
    if not isinstance(v, sympy.Float):  # |(13/10 + 7i/11)^2 - 1| evaluates to `1.68 + 0.e-22*I`
        v = sympy.Abs(x.evalf(15)).evalf(15)
    if v == 0:
        return 0
    if not (v.is_number and v.is_finite and isinstance(v, sympy.Float)):
        return None
    return 0 if v == 0 else int(mpmath.floor(mpmath.log10(mpmath.mpf(v._mpf_))))


def _eval_pair(a, b):
    """(a, b, scale) evaluated with enough digits that their difference is exact to about
    10^-50 in absolute terms for large values (50 significant digits for small ones): a
    relative tolerance at fixed precision would accept 10^60 + 1 for 10^60."""
    ma, mb = _magnitude_digits(a), _magnitude_digits(b)
    if ma is None or mb is None:
        return None
    prec = _PREC + max(ma, mb, 0)
    if prec > _MAX_PREC:
        return None
    av, bv = a.evalf(prec), b.evalf(prec)
    if not (av.is_number and bv.is_number and av.is_finite and bv.is_finite):
        return None
    return av, bv, max(abs(av), abs(bv))


def close(a, b) -> bool | None:
    """Are two closed-form numbers (possibly complex) equal? Exact rationals compare exactly;
    others agree to 10^-30 in absolute terms (relative below 1). None: undecidable."""
    if a == b:
        return True
    if isinstance(a, Rational) and isinstance(b, Rational):
        return False
    pair = _eval_pair(a, b)
    if pair is None:
        return None
    av, bv, scale = pair
    return bool(abs(av - bv) <= sympy.Float(10, _PREC) ** _TOL_EXP * min(scale, 1))


def numbers_equal(g, p, lg: Literal | None, lp: Literal | None, sig: int) -> bool:
    """Closed-form numbers: exact integers and rationals exactly, irrationals to 10^-30 at
    adaptive precision (`close`), or a decimal approximating an irrational / non-terminating
    value to its last digit (with `sig` significant digits when predicted)."""
    gx, px = _exact_value(g, lg), _exact_value(p, lp)
    if not (gx.is_finite and px.is_finite):
        return bool(gx == px)
    same = close(gx, px)
    if same:
        return True
    approx_p = lp is not None and lp.decimals is not None and not _terminating(gx)
    approx_g = lg is not None and lg.decimals is not None and not _terminating(px)
    if not (approx_p or approx_g):
        return False
    pair = _eval_pair(gx, px)
    if pair is None:
        return False
    diff = abs(pair[0] - pair[1])
    if approx_p:
        return lp.sig_digits >= sig and bool(diff * 10 ** lp.decimals < 1)
    return bool(diff * 10 ** lg.decimals * 2 <= 1)


def _terminating(x) -> bool:
    """Is x a rational with a finite decimal expansion? (False for irrationals.)"""
    x = sympy.nsimplify(x) if not isinstance(x, Rational) else x
    if not isinstance(x, Rational):
        return False
    q = int(x.q)
    for f in (2, 5):
        while q % f == 0:
            q //= f
    return q == 1


# Sample points per symbol domain (verifier.symbol_domain). `complex` assumes nothing: points
# off the real axis in all four quadrants, so |x| != x, \sqrt{x^2} != x, \ln(x^2) != 2\ln x,
# while identities of principal branches (\sqrt{1/n} = 1/\sqrt n) still hold.
_POINTS = {
    "complex": (Rational(13, 10) + Rational(7, 11) * I, Rational(-27, 11) + Rational(5, 13) * I,
                Rational(-7, 19) - Rational(31, 7) * I, Rational(17, 6) - Rational(3, 5) * I),
    "real": (Rational(13, 10), Rational(-27, 11), Rational(7, 19), Rational(-31, 7)),
    "positive": _SAMPLE_POINTS,
}


def equal_at_points(g, p, domain: str) -> bool | None:
    """Equal at several points of `domain` for every free symbol (matched by name)?
    None when the expressions have no free symbols or cannot be evaluated there."""
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return None
    syms = g.free_symbols | p.free_symbols
    if not syms or {s.name for s in g.free_symbols} != {s.name for s in p.free_symbols}:
        return None
    names = sorted({s.name for s in syms})
    points = _POINTS[domain]
    for k in range(3):
        value = {n: points[(k + j) % len(points)] for j, n in enumerate(names)}
        at = {s: value[s.name] for s in syms}
        gv, pv = g.subs(at), p.subs(at)
        if not (gv.is_number and pv.is_number):
            return None
        same = close(gv, pv)
        if not same:
            return same
    return True


def equations_equal(g_sides: tuple[str, str], p_sides: tuple[str, str], domain: str) -> bool:
    """Two equations of the same line / curve: (lhs - rhs) of one is a nonzero constant
    multiple of the other's (`y = 2x + 1`, `2x - y + 1 = 0`, `4x - 2y + 2 = 0`)."""
    parts = [_first_sympy(_parse(s)) for s in (*g_sides, *p_sides)]
    if any(not isinstance(x, sympy.Expr) or isinstance(x, MatrixBase) for x in parts):
        return False
    fg, fp = parts[0] - parts[1], parts[2] - parts[3]
    names = {s.name for s in fg.free_symbols}
    if not names or names != {s.name for s in fp.free_symbols}:
        return False
    syms = fg.free_symbols | fp.free_symbols
    points = _POINTS["complex" if domain == "complex" else "real"]
    ratio = None
    for k in range(len(points)):
        value = {n: points[(k + j) % len(points)] for j, n in enumerate(sorted(names))}
        at = {s: value[s.name] for s in syms}
        gv, pv = fg.subs(at), fp.subs(at)
        if not (gv.is_number and pv.is_number) or close(pv, sympy.Integer(0)) is not False:
            return False
        r = gv / pv
        if ratio is None:
            if close(r, sympy.Integer(0)) is not False:
                return False
            ratio = r
        elif not close(r, ratio):
            return False
    return True


def _relation_vs_set(g, p) -> bool:
    def is_rel(x):
        return isinstance(x, (sympy.core.relational.Relational, sympy.logic.boolalg.And))
    return (is_rel(p) and isinstance(g, sympy.Set)) or (is_rel(g) and isinstance(p, sympy.Set))


def equivalent(g: str, p: str, lg: Literal | None, lp: Literal | None,
               sig: int, domain: str = "complex") -> tuple[bool, str | None]:
    """Compare two normalised single answers with math-verify plus the fixes above.

    `domain` (verifier.symbol_domain) is what free symbols may be: math-verify parses every
    symbol as real, so its `verify` is checked at points of `domain` and overruled when the
    two differ there (`|x|` vs `\\sqrt{x^2}` for `complex`)."""
    gold = _first_sympy(_parse_gold(g))
    if gold is None:
        return False, "gold answer did not parse: compared as text"
    pred = _first_sympy(_parse(p))
    if pred is None:
        return False, "answer did not parse"
    gold, pred = _imaginary_fix(gold, pred)
    if _is_plain_number(gold) and _is_plain_number(pred):
        return numbers_equal(gold, pred, lg, lp, sig), None
    if verify(gold, pred, timeout_seconds=None):
        if domain != "real" and equal_at_points(gold, pred, domain) is False:
            return False, f"differ for {domain} values of the symbols"
        return True, None
    if _relation_vs_set(gold, pred) and verify(gold, pred, timeout_seconds=None,
                                               allow_set_relation_comp=True):
        return True, "relation vs set"
    if equal_at_points(gold, pred, domain):
        return True, f"equal at {domain} points"
    return False, None
