"""Hand-labelled cases for the three grading classes of issue 15 part 5, graded by the pure core.

1. Huge golds: an answer a small integer away from a very large gold is wrong (exact integers
   and rationals compare exactly; irrationals at a precision that grows with their size).
2. No assumed domain: symbols are not positive or real unless `verifier.symbol_domain` says so,
   so an expression and its absolute value differ.
3. Equations: two rearrangements (or nonzero multiples) of one line / curve are equal.
"""
import pytest

from verifier import VerifierConfig, grade

B = "\\boxed"
CASES = [
    # ---- 1. huge golds -----------------------------------------------------------------
    (f"{B}{{10^{{60}}+1}}", "10^{60}", "incorrect"),
    (f"{B}{{10^{{60}}}}", "10^{60}", "correct"),
    (f"{B}{{3^{{90}}-1}}", "3^{90}", "incorrect"),
    (f"{B}{{100!+1}}", "100!", "incorrect"),
    (f"{B}{{\\frac{{10^{{50}}+1}}{{3}}}}", "\\frac{10^{50}}{3}", "incorrect"),
    (f"{B}{{2^{{100}}}}", "1267650600228229401496703205376", "correct"),
    (f"{B}{{1267650600228229401496703205377}}", "2^{100}", "incorrect"),
    (f"{B}{{10^{{45}}\\sqrt{{2}}+1}}", "10^{45}\\sqrt{2}", "incorrect"),
    (f"{B}{{\\pi+10^{{45}}}}", "\\pi+10^{45}+1", "incorrect"),
    (f"{B}{{10^{{45}}\\pi}}", "\\pi\\cdot 10^{45}", "correct"),
    (f"{B}{{\\sqrt{{2}}\\cdot 10^{{70}}}}", "10^{70}\\sqrt{2}", "correct"),
    (f"{B}{{2^{{200}}-2}}", "2(2^{199}-1)", "correct"),
    (f"{B}{{x+10^{{60}}+1}}", "x+10^{60}", "incorrect"),
    (f"{B}{{1.0000000000000000000000000000000000000000001}}", "1", "incorrect"),
    # ---- 2. no assumed domain ------------------------------------------------------------
    (f"{B}{{|x|}}", "x", "incorrect"),
    (f"{B}{{x}}", "|x|", "incorrect"),
    (f"{B}{{\\sqrt{{x^2}}}}", "x", "incorrect"),
    (f"{B}{{x}}", "\\sqrt{x^2}", "incorrect"),
    (f"{B}{{(x^2)^{{1/2}}}}", "x", "incorrect"),
    (f"{B}{{|a-b|}}", "a-b", "incorrect"),
    (f"{B}{{\\ln(x^2)}}", "2\\ln x", "incorrect"),
    (f"{B}{{\\sqrt{{a}}\\sqrt{{b}}}}", "\\sqrt{ab}", "incorrect"),
    (f"{B}{{|x|}}", "\\sqrt{x^2}", "incorrect"),  # equal only for real x (see the test below)
    (f"{B}{{\\sqrt{{1/n}}}}", "\\frac{1}{\\sqrt n}", "correct"),  # same principal branch
    (f"{B}{{\\frac{{\\sqrt{{x}}}}{{x}}}}", "\\frac{1}{\\sqrt{x}}", "correct"),
    (f"{B}{{(x+1)^2}}", "x^2+2x+1", "correct"),
    (f"{B}{{|-3|}}", "3", "correct"),
    # ---- 3. equations ----------------------------------------------------------------------
    (f"{B}{{2x - y + 1 = 0}}", "y = 2x + 1", "correct"),
    (f"{B}{{y = 2x + 1}}", "2x - y + 1 = 0", "correct"),
    (f"{B}{{4x - 2y + 2 = 0}}", "y = 2x + 1", "correct"),
    (f"{B}{{y - 1 = 2x}}", "y = 2x + 1", "correct"),
    (f"{B}{{0 = 2x - y + 1}}", "y = 2x + 1", "correct"),
    (f"{B}{{-2x + y - 1 = 0}}", "y = 2x + 1", "correct"),
    (f"{B}{{2x+1=y}}", "y = 2x+1", "correct"),
    (f"{B}{{y=2x+1}}", "y-2x=1", "correct"),
    (f"{B}{{y = 2x - 1}}", "y = 2x + 1", "incorrect"),
    (f"{B}{{2x - y - 1 = 0}}", "y = 2x + 1", "incorrect"),
    (f"{B}{{0=0}}", "y = 2x + 1", "incorrect"),
    (f"{B}{{y = x}}", "y^2 = x^2", "incorrect"),  # a different curve (two lines)
    (f"{B}{{\\frac{{x^2}}{{4}}+\\frac{{y^2}}{{9}}=1}}", "9x^2+4y^2=36", "correct"),
    (f"{B}{{x^2+y^2-1=0}}", "x^2+y^2=1", "correct"),
    (f"{B}{{x^2+y^2=4}}", "x^2+y^2=1", "incorrect"),
    (f"{B}{{3=x}}", "x=3", "correct"),
    (f"{B}{{2x=6}}", "x=3", "correct"),
    (f"{B}{{y = 2x+3}}", "2x+3", "correct"),  # the gold's `y =` still optional
]


@pytest.mark.parametrize("completion,gold,outcome", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_false_positive_classes(completion, gold, outcome):
    v = grade(completion, gold)
    assert v.outcome == outcome, v


@pytest.mark.parametrize("completion,gold,domain,outcome", [
    (f"{B}{{|x|}}", "\\sqrt{x^2}", "real", "correct"),
    (f"{B}{{|x|}}", "x", "real", "incorrect"),
    (f"{B}{{|x|}}", "x", "positive", "correct"),
    (f"{B}{{\\sqrt{{a}}\\sqrt{{b}}}}", "\\sqrt{ab}", "positive", "correct"),
    (f"{B}{{\\ln(x^2)}}", "2\\ln x", "positive", "correct"),
    (f"{B}{{x+10^{{60}}+1}}", "x+10^{60}", "positive", "incorrect"),
])
def test_symbol_domain_when_the_problem_says_so(completion, gold, domain, outcome):
    assert grade(completion, gold, cfg=VerifierConfig(symbol_domain=domain)).outcome == outcome


def test_symbol_domain_is_checked():
    with pytest.raises(ValueError, match="verifier.symbol_domain"):
        VerifierConfig(symbol_domain="integer")
