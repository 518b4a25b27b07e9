"""Every gold answer of the benchmarks grades correct against itself (and not against a
corrupted copy): the startup self-check, run in-process on the full files where they are
(`full_benchmarks`: skips saying where it looked when absent) and on the hand-written
fixtures in any clone."""
import json

import pytest

from conftest import FIXTURE_BENCHMARKS
from verifier import self_check
from verifier.extract import gold_from_record
from verifier.normalize import container, normalize, parse_literal


@pytest.fixture
def _golds(full_benchmarks):
    def read(name: str) -> list[str]:
        with (full_benchmarks / name).open() as f:
            return [gold_from_record(json.loads(line)) for line in f]
    return read


@pytest.mark.parametrize("path", sorted(FIXTURE_BENCHMARKS.glob("*.jsonl")), ids=lambda p: p.stem)
def test_fixture_golds_self_check(path):
    golds = [gold_from_record(json.loads(line)) for line in path.open()]
    assert golds and self_check(golds, max_fail_frac=0.0) == []


def test_math500_golds_grade_correct_against_themselves(_golds):
    golds = _golds("math500.jsonl")
    assert len(golds) == 500
    assert self_check(golds, max_fail_frac=0.0) == []


def test_math500_golds_parse_and_equal_themselves_symbolically(_golds):
    """Beyond the text shortcut: each non-literal single gold parses and equals itself."""
    from verifier import symbolic

    for g in map(normalize, _golds("math500.jsonl")):
        if container(g).kind == "single" and parse_literal(g) is None:
            assert symbolic.equivalent(g, g, None, None, 6)[0], g


@pytest.mark.parametrize("name", ["aime24.jsonl", "aime25.jsonl", "amc23.jsonl",
                                  "gsm8k_test.jsonl"])
def test_small_benchmarks_self_check(_golds, name):
    assert self_check(_golds(name), max_fail_frac=0.0) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["olympiadbench.jsonl", "math_test_full.jsonl"])
def test_large_benchmarks_self_check(_golds, name):
    assert self_check(_golds(name), max_fail_frac=0.01) is not None
