"""Queries go to the least-loaded engine (actors.group.assign_least_loaded)."""
import random

from actors.group import assign_least_loaded


def test_every_query_once_in_order_per_engine():
    lengths = [random.Random(0).randint(5, 500) for _ in range(101)]
    shares = assign_least_loaded(lengths, 3)
    assert sorted(i for s in shares for i in s) == list(range(101))
    assert all(s == sorted(s) for s in shares)


def test_load_is_balanced_by_prompt_tokens():
    lengths = [1000] + [10] * 50  # one long prompt: the other engine takes all the short ones
    shares = assign_least_loaded(lengths, 2)
    assert shares[0] == [0] and len(shares[1]) == 50
    lengths = [7, 3, 5, 5, 2, 8, 4, 6]
    loads = [sum(lengths[i] for i in s) for s in assign_least_loaded(lengths, 2)]
    assert abs(loads[0] - loads[1]) <= 2


def test_more_engines_than_queries_and_one_engine():
    assert assign_least_loaded([3, 1], 4) == [[0], [1], [], []]
    assert assign_least_loaded([3, 1, 2], 1) == [[0, 1, 2]]
