"""The sympy / math-verify half of `equivalence` (imported lazily: it costs ~1.5 s).

Runs only inside a grading process under a hard deadline. math-verify's own
`signal.alarm` timeouts are switched off (`parsing_timeout=None`, `timeout_seconds=None`).
Parsed objects never leave this module; only booleans and short notes do.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import sympy
from math_verify import LatexExtractionConfig, parse, verify
from sympy import Basic, I, MatrixBase, Rational, Symbol

logging.getLogger("math_verify").setLevel(logging.ERROR)

from verifier.normalize import Literal

_SAMPLE_POINTS = (Rational(13, 10), Rational(27, 11), Rational(7, 19), Rational(31, 7))
_PREC = 50


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


def numbers_equal(g, p, lg: Literal | None, lp: Literal | None, sig: int) -> bool:
    """Closed-form numbers: exact at 50 digits, or a decimal approximating an irrational /
    non-terminating value to its last digit (with `sig` significant digits when predicted)."""
    gx, px = _exact_value(g, lg), _exact_value(p, lp)
    gv, pv = gx.evalf(_PREC), px.evalf(_PREC)
    if not (gv.is_finite and pv.is_finite):
        return bool(gx == px)
    diff = abs(gv - pv)
    scale = max(abs(gv), abs(pv))
    if diff == 0 or diff <= scale * sympy.Float(10, _PREC) ** -40:
        return True
    if lp is not None and lp.decimals is not None and not _terminating(gx):
        return lp.sig_digits >= sig and bool(diff * 10 ** lp.decimals < 1)
    if lg is not None and lg.decimals is not None and not _terminating(px):
        return bool(diff * 10 ** lg.decimals * 2 <= 1)
    return False


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


def _equal_for_positive_symbols(g, p) -> bool:
    """Rescue `\\sqrt{1/n}` == `\\frac{1}{\\sqrt n}`: equal at a few positive sample points
    (50-digit evaluation; cheaper and more often right than `simplify`)."""
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return False
    syms = g.free_symbols | p.free_symbols
    if not syms or {s.name for s in g.free_symbols} != {s.name for s in p.free_symbols}:
        return False
    pos = {s: Symbol(s.name, positive=True) for s in syms}
    gp, pp = g.subs(pos), p.subs(pos)
    for k in range(3):
        point = {s: _SAMPLE_POINTS[(k + j) % len(_SAMPLE_POINTS)] for j, s in enumerate(pos.values())}
        gv, pv = gp.subs(point).evalf(_PREC), pp.subs(point).evalf(_PREC)
        if not (gv.is_number and pv.is_number and gv.is_finite and pv.is_finite):
            return False
        if abs(gv - pv) > max(abs(gv), abs(pv), 1) * sympy.Float(10, _PREC) ** -30:
            return False
    return True


def _relation_vs_set(g, p) -> bool:
    def is_rel(x):
        return isinstance(x, (sympy.core.relational.Relational, sympy.logic.boolalg.And))
    return (is_rel(p) and isinstance(g, sympy.Set)) or (is_rel(g) and isinstance(p, sympy.Set))


def equivalent(g: str, p: str, lg: Literal | None, lp: Literal | None,
               sig: int) -> tuple[bool, str | None]:
    """Compare two normalised single answers with math-verify plus the fixes above."""
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
        return True, None
    if _relation_vs_set(gold, pred) and verify(gold, pred, timeout_seconds=None,
                                               allow_set_relation_comp=True):
        return True, "relation vs set"
    if _equal_for_positive_symbols(gold, pred):
        return True, "equal for positive symbols"
    return False, None
