"""pass@k, maj@k and the sampled metrics against hand-computed values."""
from fractions import Fraction
from itertools import combinations

import pytest

from launch.evaluation.passk import (ProblemSamples, cluster, maj_at_k, majority_index, pass_at_k,
                          sampled_metrics)
from verifier.equivalence import equivalent


def _same(a, b):  # the verifier's equivalence, in-process (the evaluator asks the pool)
    return equivalent(a, b)[0]


@pytest.mark.parametrize("n,c,k,want", [
    (4, 2, 1, Fraction(1, 2)),
    (4, 2, 2, Fraction(5, 6)),     # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (4, 2, 3, Fraction(1)),        # any 3 of 4 hold one of the 2 correct
    (4, 0, 4, Fraction(0)),
    (4, 4, 1, Fraction(1)),
    (5, 1, 2, Fraction(2, 5)),     # 1 - C(4,2)/C(5,2) = 1 - 6/10
    (10, 3, 5, Fraction(11, 12)),  # 1 - C(7,5)/C(10,5) = 1 - 21/252
])
def test_pass_at_k_hand_computed(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(float(want), abs=1e-12)


def test_pass_at_k_is_the_mean_over_all_k_subsets():
    correct = [1, 0, 0, 1, 0, 1]
    for k in range(1, 7):
        subsets = list(combinations(correct, k))
        assert pass_at_k(6, 3, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_large_n_exact():
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(1000, 0, 500) == 0.0


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, 2, 0), (4, 2, 5), (3, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_cluster_counts_equivalent_answers_as_one():
    answers = ["\\frac12", "0.5", "3", "1/2", "3.0", "7"]
    assert cluster(answers, _same) == [[0, 1, 3], [2, 4], [5]]


def test_maj_at_k_counts_equivalent_answers_together():
    # text votes: "3" twice beats each spelling of 1/2 once; by value 1/2 wins 3 to 2
    answers = ["3", "\\frac{1}{2}", "0.5", "3", "1/2"]
    correct = [False, True, True, False, True]
    assert maj_at_k(answers, correct, 5, _same)
    assert not maj_at_k(answers, correct, 5, lambda a, b: a == b)
    assert not maj_at_k(answers, correct, 1, _same)  # first sample alone
    assert majority_index(answers, _same) == 1


def test_maj_at_k_ties_and_missing_answers():
    assert maj_at_k(["5", "4"], [True, False], 2, _same)          # tie: the class seen first
    assert not maj_at_k(["4", "5"], [False, True], 2, _same)
    assert maj_at_k([None, None, "5"], [False, False, True], 3, _same)  # no answer: no vote
    assert not maj_at_k([None, None], [False, False], 2, _same)


def test_sampled_metrics_hand_computed():
    same = _same
    problems = [
        # 2 of 4 correct; majority: 0.5 == 1/2 (2 votes) vs 3 (1) -> correct
        ProblemSamples(("1/2", "3", "0.5", None), (True, False, True, False), (True, True, True, False)),
        # 0 of 4 correct
        ProblemSamples(("1", "1", "2", "2"), (False,) * 4, (True,) * 4),
    ]
    m = sampled_metrics(problems, [1, 2, 4], same)
    assert m["pass@1"] == pytest.approx((2 / 4 + 0) / 2)
    assert m["pass@2"] == pytest.approx((5 / 6 + 0) / 2)
    assert m["pass@4"] == pytest.approx((1 + 0) / 2)
    assert m["maj@1"] == pytest.approx(0.5)   # problem 1's first sample is right
    assert m["maj@2"] == pytest.approx(0.5)   # tie 1/2 vs 3: first seen
    assert m["maj@4"] == pytest.approx(0.5)
    assert m["truncated_frac"] == pytest.approx(1 / 8)
    assert all(m[f"pass@{k}"] >= m["pass@1"] for k in (2, 4))


def test_sampled_metrics_rejects_k_over_n():
    with pytest.raises(ValueError, match="eval.k"):
        sampled_metrics([ProblemSamples(("1",), (True,), (True,))], [2], _same)
