"""Pure core: Verdict, config, extraction, normalisation, literals, metrics, self-check."""
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from verifier import OUTCOMES, Verdict, VerifierConfig, grade, metrics
from verifier.extract import after_reasoning, extract_answer, gold_answer, gold_from_record, last_boxed
from verifier.normalize import container, normalize, parse_literal, split_top_level
from verifier.self_check import corrupt, self_check

ROOT = Path(__file__).resolve().parents[2]


def test_import_is_light():
    code = "import sys, verifier; print('ray' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_verdict_validates():
    with pytest.raises(ValueError, match="outcome"):
        Verdict(False, "wrong")
    with pytest.raises(ValueError, match="contradicts"):
        Verdict(True, "incorrect")
    v = Verdict(True, "correct", "1", 0.5)
    assert v.reward == 1.0 and Verdict.from_tuple(v.to_tuple()) == v
    with pytest.raises(Exception):
        v.correct = False  # frozen


def test_config_checks_name_the_key():
    with pytest.raises(ValueError, match="verifier.timeout_s"):
        VerifierConfig(timeout_s=0)
    with pytest.raises(ValueError, match="verifier.judge_model"):
        VerifierConfig(judge_url="http://127.0.0.1:1/v1")
    assert VerifierConfig().timeout_s == 3.0 and VerifierConfig().num_workers == 2


def test_reasoning_markers_keep_text_after_the_last():
    text = "a </think> b **Final Answer** c <conclude> d"
    assert after_reasoning(text) == " d"
    assert after_reasoning("no markers") == "no markers"


def test_boxed_is_brace_matched_and_escapes_ignored():
    assert last_boxed("\\boxed{\\frac{1}{2}} then \\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("\\boxed{1} \\boxed{2") == "1"  # an unclosed box is skipped
    assert last_boxed("\\boxed 5") == "5"
    assert last_boxed("$\\boxed{1}$, $\\boxed{2}$ and $\\boxed{3}$") == "1, 2, 3"
    assert last_boxed("\\boxed{1}. Then we get \\boxed{2}") == "2"


def test_long_completion_keeps_the_tail():
    text = "\\boxed{1}" + "x" * 50_000 + "\\boxed{2}"
    assert extract_answer(text, max_chars=1_000) == "2"
    assert extract_answer("\\boxed{1}" + "x" * 50_000, max_chars=1_000) is None


def test_answer_is_forms():
    assert extract_answer("Thus the answer is $x = 3$.") == "x = 3"
    assert extract_answer("The final answer is \\(\\frac{1}{2}\\)") == "\\frac{1}{2}"
    assert extract_answer("**Answer:** 12.5 meters\nmore text") == "12.5 meters"


def test_gold_formats():
    assert gold_answer("text\n#### 1,234") == "1234"
    assert gold_from_record({"final_answer": ["$2,-1,-18$"]}) == "2,-1,-18"
    assert gold_from_record({"final_answer": ["$x=1$", "$x=2$"]}) == "x=1, x=2"
    assert gold_from_record({"answer": 27.0}) == "27"
    assert gold_from_record({"solution": "so $\\boxed{\\frac12}$."}) == "\\frac12"


@pytest.mark.parametrize("raw,norm", [
    ("\\left( 1, 2 \\right)", "( 1, 2 )"), ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("50\\%", "50"), ("90^{\\circ}", "90"), ("\\$1,000", "1000"), ("x = 5", "5"),
    ("f(x) = x^2", "x^2"), ("\\text{(B)}", "B"), ("0.\\overline{6}", "\\frac{2}{3}"),
    ("x \\ge -1", "[-1,\\infty)"), ("2 < y < 5", "(2,5)"), ("\\varnothing", "\\emptyset"),
    ("7 dollars.", "7"), ("2 m", "2 m"),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


def test_literals():
    assert parse_literal("-\\frac{3}{4}").value == Fraction(-3, 4)
    assert parse_literal("2.50").decimals == 2 and parse_literal("0.00120").sig_digits == 3
    assert parse_literal("1.5\\times10^{3}").value == 1500
    assert parse_literal("x") is None and parse_literal("1/0") is None


def test_containers():
    assert container("\\{1,2\\}").kind == "set"
    assert container("(1,2]").kind == "half"
    assert container("1, 2").kind == "list" and container("1 \\text{ or } 2").items == ("1", "2")
    assert container("(1,2)\\cup(3,4)").kind == "single"
    assert split_top_level("(1,2),\\{3,4\\},5") == ["(1,2)", "\\{3,4\\}", "5"]


def test_truncated_beats_a_correct_answer():
    v = grade("\\boxed{4}", "4", finished=False)
    assert (v.outcome, v.correct, v.answer) == ("truncated", False, "4")


def test_grade_is_total():
    for completion in ["", "\\boxed{\\frac{", "\\boxed{)(}", "\x00\\boxed{1}", "\\boxed{" + "}" * 10]:
        assert grade(completion, "1").outcome in OUTCOMES


def test_metrics_has_every_key():
    m = metrics([Verdict(True, "correct", "1", 0.01)] * 3 + [Verdict(False, "timeout", None, 3.0)])
    assert {f"verifier/outcome/{o}" for o in OUTCOMES} <= set(m)
    assert m["verifier/outcome/correct"] == 3 and m["verifier/timeout_frac"] == 0.25
    assert m["verifier/latency_p50_s"] == 0.01 and m["verifier/latency_p99_s"] == 3.0
    assert metrics([])["verifier/accuracy"] == 0.0


def test_corrupt_changes_the_value():
    assert corrupt("9") == "0" and corrupt("x^2") == "x^3" and corrupt("\\pi") == "\\pi+1"


def test_self_check_in_process_names_failures():
    assert self_check(["1", "\\frac{1}{2}"]) == []
    with pytest.raises(ValueError, match="1/1 gold answers"):
        self_check(["\\frac{1}{2"])
    assert len(self_check(["1", "\\frac{1}{2"], max_fail_frac=0.5)) == 1


def test_self_check_grades_each_distinct_gold_once_and_counts_repeats():
    graded = []

    def grade_many(completions, golds, finished):
        graded.extend(golds)
        return [grade(c, g, finished=f) for c, g, f in zip(completions, golds, finished)]

    golds = ["7"] * 50 + ["\\frac{1}{2"] * 3 + ["5"] * 47  # 3 of 100 golds cannot be graded
    assert len(self_check(golds, grade_many, max_fail_frac=0.05)) == 1  # one distinct failure, tolerated
    assert sorted(graded) == sorted(["7", "\\frac{1}{2", "5"] * 2)  # itself and corrupted, once each
    with pytest.raises(ValueError, match="3/100 gold answers"):  # repeats weigh in the fraction
        self_check(golds, grade_many, max_fail_frac=0.02)
