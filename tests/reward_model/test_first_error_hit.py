"""Where the token RM's biggest score drop lands against the first wrong token (instruments)."""
import pytest
import torch

from reward_model.instruments import first_error_hit, first_error_rates


def drop_at(n: int, i: int) -> torch.Tensor:
    """Scores for n response tokens whose only drop is d_i (scores[i - 1] - scores[i] = 1)."""
    s = torch.zeros(n + 1)
    s[i:] = -1.0
    return s


def test_hit_within_one_of_the_first_score_that_saw_the_wrong_token():
    n, k = 10, 4  # the first score that has seen token 4 is scores[5]
    assert first_error_hit(drop_at(n, 5), k) == (True, 3 / 10)
    assert first_error_hit(drop_at(n, 4), k)[0]  # i* = k: one early
    assert first_error_hit(drop_at(n, 6), k)[0]  # i* = k + 2: one late
    assert not first_error_hit(drop_at(n, 7), k)[0]  # k + 3
    assert not first_error_hit(drop_at(n, 3), k)[0]  # k - 1
    # Rises do not count as drops: the biggest drop, not the biggest change.
    s = torch.tensor([0.0, 0.0, 5.0, 5.0, 5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    assert first_error_hit(s, 3)[0] and not first_error_hit(s, 0)[0]


def test_ties_pick_the_first_drop():
    s = torch.tensor([3.0, 2.0, 2.0, 2.0, 2.0, 1.0])  # d_1 = d_5 = 1
    assert first_error_hit(s, 0)[0]  # i* = 1
    assert not first_error_hit(s, 4)[0]  # the tie at i = 5 is not taken


def test_chance_at_the_edges_and_in_the_middle():
    s = torch.arange(9.0)  # n = 8
    assert first_error_hit(s, 0)[1] == 2 / 8  # i in {1, 2}
    assert first_error_hit(s, 7)[1] == 2 / 8  # i in {7, 8}
    assert first_error_hit(s, 3)[1] == 3 / 8  # i in {3, 4, 5}
    assert first_error_hit(torch.tensor([1.0, 0.0]), 0) == (True, 1.0)  # n = 1
    assert first_error_hit(torch.tensor([0.0, 1.0]), 0) == (True, 1.0)  # only one place to be
    assert first_error_hit(torch.tensor([0.0, 1.0, 2.0]), 1)[1] == 1.0  # n = 2: every i is near


def test_rejects_bad_k_and_empty_responses():
    with pytest.raises(ValueError, match="k=3"):
        first_error_hit(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="k=-1"):
        first_error_hit(torch.zeros(4), -1)
    with pytest.raises(ValueError):
        first_error_hit(torch.zeros(1), 0)
    with pytest.raises(ValueError):
        first_error_hit(torch.zeros(2, 3), 0)


def test_rates():
    assert first_error_rates([]) == {}
    rates = first_error_rates([(True, 0.5), (False, 0.25), (True, 0.75), (False, 0.5)])
    assert rates == {"reward_model/first_error_hit": 0.5, "reward_model/first_error_chance": 0.5,
                     "reward_model/first_error_n": 4}
