"""LLM judge against a local fake endpoint: rescues only, never overturns."""
import time

import pytest

from verifier import grade
from verifier.judge import LLMJudge, parse_reply

from fake_judge import FakeJudge  # noqa: E402  (tests/verifier is on sys.path)


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudge() as server:
        yield server


def _rescue(server, completions, gold="\\frac{1}{2}", timeout_s=1.0):
    judge = LLMJudge(server.url, "fake-model", timeout_s=timeout_s)
    try:
        verdicts = [grade(c, gold) for c in completions]
        return verdicts, judge.rescue(verdicts, [gold] * len(verdicts))
    finally:
        judge.close()


def test_yes_rescues_an_incorrect_verdict(judge_server):
    before, after = _rescue(judge_server, ["\\boxed{one half}", "\\boxed{a half}"])
    assert [v.outcome for v in before] == ["incorrect", "incorrect"]
    assert [v.outcome for v in after] == ["correct", "correct"]
    assert all(v.correct and v.detail == "rescued by LLM judge" for v in after)


def test_judge_asked_only_about_rule_incorrect(judge_server):
    judge_server.requests.clear()
    before, after = _rescue(judge_server, ["\\boxed{\\frac12}", "no answer here", "\\boxed{8}"])
    assert before[0].correct and after[0] == before[0]  # rule-correct: never asked
    assert after[1].outcome == "no_answer"              # nothing to ask about
    assert after[2].outcome == "incorrect"              # judge says NO
    asked = [r["messages"][-1]["content"] for r in judge_server.requests]
    assert len(asked) == 1 and "Student answer: 8" in asked[0]
    assert judge_server.requests[0]["temperature"] == 0
    assert judge_server.requests[0]["model"] == "fake-model"


def test_judge_never_overturns_a_rule_verdict_of_truncation(judge_server):
    judge = LLMJudge(judge_server.url, "fake-model", timeout_s=1.0)
    try:
        v = grade("\\boxed{7}", "3", finished=False)  # the fake judge would say YES to 7
        assert judge.rescue([v], ["3"])[0].outcome == "truncated"
    finally:
        judge.close()


@pytest.mark.parametrize("answer", ["half", "boom", "slow"])
def test_unclear_error_or_slow_reply_counts_as_incorrect(judge_server, answer):
    t0 = time.monotonic()
    _, after = _rescue(judge_server, [f"\\boxed{{{answer}}}"], timeout_s=0.5)
    assert after[0].outcome == "incorrect"
    assert time.monotonic() - t0 < 2.0


def test_parse_reply():
    assert parse_reply("YES") and parse_reply("**Yes**") and parse_reply("yes, they match")
    assert parse_reply("No.") is False
    assert parse_reply("") is None and parse_reply("The answers are equivalent") is None
