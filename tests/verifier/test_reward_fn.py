"""`verifier.reward_fn`: a user's function grades instead of the math rules, through the real
grading subprocess (`GradingWorker`: deadline, memory cap, secret-free environment), its
values become verdicts and rewards, and a spec that cannot be loaded is refused in one line
before Ray starts."""
from __future__ import annotations

import random
import sys
import time

import pytest

from verifier import VerifierConfig, check_verdicts
from verifier.plugins import reward_fn
from verifier.plugins.reward_fn import load, verdict_of
from verifier.verdict import Verdict
from verifier.worker import DEFAULT_TARGET, GradingWorker, child_env, grading_target

pytestmark = pytest.mark.timeout(180)
STRING_MATCH = "verifier.plugins.string_match:reward"
USER_MODULE = '''
import os
import time


def reward(completion, gold, question):
    """Behaves as the completion says; else exact match."""
    if completion == "raise":
        raise RuntimeError("boom\\nsecond line")
    if completion == "hang":
        time.sleep(60)
    if completion == "alloc":  # past verifier.worker_memory_mb
        return len(bytearray(4 * 2**30)) > 0
    if completion == "secret":  # the parent's credential must not reach the grading process
        return "OREAL_TEST_API_KEY" not in os.environ
    if completion == "none":
        return None
    if completion == "nan":
        return float("nan")
    if completion == "question":
        return question == "Q?"
    if completion.startswith("score:"):
        return float(completion[len("score:"):])
    return completion == gold


def two_args(completion, gold):
    return True
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """`oreal_user_reward`, importable by this process (on sys.path) but not from PYTHONPATH:
    as a module beside the launch folder is for a Ray actor and not for its grading child."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "oreal_user_reward.py").write_text(USER_MODULE)
    (folder / "oreal_broken_reward.py").write_text("raise RuntimeError('cannot start\\nmore')\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in ("oreal_user_reward", "oreal_broken_reward"):
        sys.modules.pop(name, None)


# ------------------------------------------------------------------ values -> verdicts

def test_a_return_value_becomes_a_verdict():
    import numpy as np

    assert [(v.outcome, v.score) for v in map(verdict_of, (True, False, np.bool_(True)))] == \
        [("correct", None), ("incorrect", None), ("correct", None)]
    assert [(v.correct, v.score, v.reward) for v in map(verdict_of, (0.7, -0.2, 0, 1, np.float32(0.5)))] == \
        [(True, 0.7, 0.7), (False, -0.2, -0.2), (False, 0.0, 0.0), (True, 1.0, 1.0), (True, 0.5, 0.5)]
    for bad, why in [(float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
                     ("yes", "a str, not a bool or a number"), (None, "a NoneType")]:
        v = verdict_of(bad)
        assert v.outcome == "error" and why in v.detail


def test_a_score_crosses_processes_and_must_agree_with_correct():
    v = Verdict(True, "correct", None, 0.1, None, None, 0.25)
    assert Verdict.from_tuple(v.to_tuple()) == v and v.reward == 0.25
    assert Verdict(False, "incorrect").reward == -1.0  # no score: the outcome's
    with pytest.raises(ValueError, match="score"):
        Verdict(True, "correct", score=-1.0)
    with pytest.raises(ValueError, match="score"):
        Verdict(False, "incorrect", score=float("nan"))


# ------------------------------------------------------------------ refused before Ray

@pytest.mark.parametrize("spec,why", [
    ("no_such_module_xyz:reward", "cannot import no_such_module_xyz (ModuleNotFoundError"),
    ("oreal_broken_reward:reward", "cannot import oreal_broken_reward (RuntimeError: cannot start)"),
    ("verifier.plugins.string_match:nope", "has no nope"),
    ("verifier.plugins.string_match:_BOXED", "_BOXED is a Pattern, not a function"),
    ("verifier.plugins.string_match:normalize", "normalize(text: 'str') -> 'str' cannot be called as"),
    ("oreal_user_reward:two_args", "two_args(completion, gold) cannot be called as two_args(completion, gold, "
                                   "question)"),
])
def test_a_spec_that_cannot_be_loaded_is_refused_in_one_line(user_module, spec, why):
    with pytest.raises(ValueError) as err:
        load(spec)
    assert str(err.value).startswith(f"verifier.reward_fn={spec}: ") and why in str(err.value)
    assert "\n" not in str(err.value)


def test_load_returns_a_function_that_takes_three_arguments(user_module):
    assert load(STRING_MATCH)("\\boxed{Paris}", "paris", None) is True
    assert load("oreal_user_reward:reward")("score:0.5", "", None) == 0.5


def test_the_config_refuses_a_malformed_spec_and_the_judge_beside_it():
    with pytest.raises(ValueError, match=r"^verifier.reward_fn must be 'package.module:function', got 'string_match'"):
        VerifierConfig(reward_fn="string_match")
    with pytest.raises(ValueError, match=r"^verifier.reward_fn with verifier.judge_url"):
        VerifierConfig(reward_fn=STRING_MATCH, judge_url="http://127.0.0.1:1/v1", judge_model="m")
    assert VerifierConfig().reward_fn is None and grading_target(VerifierConfig()) == DEFAULT_TARGET
    assert grading_target(VerifierConfig(reward_fn=STRING_MATCH)) == reward_fn.TARGET


def test_training_is_refused_before_ray_naming_the_key(user_module):
    from conftest import compose
    from launch.config import to_train_config

    with pytest.raises(ValueError, match=r"^verifier.reward_fn=no_such_module_xyz:f: cannot import"):
        to_train_config(compose(["verifier.reward_fn=no_such_module_xyz:f"]))
    with pytest.raises(ValueError, match=r"^verifier.reward_fn=oreal_user_reward:two_args: .*cannot be called"):
        to_train_config(compose(["verifier.reward_fn=oreal_user_reward:two_args"]))
    assert to_train_config(compose([f"verifier.reward_fn={STRING_MATCH}"])).verifier.reward_fn == STRING_MATCH


# ------------------------------------------------------------------ in the grading subprocess

def test_the_string_match_example_grades_in_the_grading_child():
    worker = GradingWorker(VerifierConfig(reward_fn=STRING_MATCH), spare=False)
    try:
        assert worker.target == reward_fn.TARGET
        verdicts = worker.grade_many([
            ("So the capital is \\boxed{Paris}.", "paris", True, "What is the capital of France?"),
            ("I think\nLyon", "Paris", True),
            ("\\boxed{Paris}", "Paris", False),  # no stop token: truncated, the function is not asked
            ("\\boxed{  New   York }", "new york", True, None),
        ])
    finally:
        worker.shutdown()
    assert [v.outcome for v in verdicts] == ["correct", "incorrect", "truncated", "correct"]
    assert all(v.score is None for v in verdicts)  # a bool: the outcome's reward


def test_a_users_function_gets_the_deadline_the_memory_cap_and_no_secrets(user_module, monkeypatch):
    monkeypatch.setenv("OREAL_TEST_API_KEY", "sk-not-for-the-grader")
    assert str(user_module) not in child_env().get("PYTHONPATH", "")  # found through import_root only
    cfg = VerifierConfig(reward_fn="oreal_user_reward:reward", timeout_s=1.5, worker_memory_mb=1024)
    worker = GradingWorker(cfg)
    try:
        jobs = [("Paris", "Paris", True), ("score:0.25", "", True), ("score:-0.5", "", True), ("score:0", "", True),
                ("question", "", True, "Q?"), ("secret", "", True), ("raise", "", True), ("none", "", True),
                ("nan", "", True), ("alloc", "", True)]
        verdicts = worker.grade_many(jobs)
        t0 = time.monotonic()
        hang, after = worker.grade_many([("hang", "", True), ("Paris", "Paris", True)])
        hang_s = time.monotonic() - t0
    finally:
        worker.shutdown()
    assert [(v.outcome, v.score) for v in verdicts[:6]] == [
        ("correct", None), ("correct", 0.25), ("incorrect", -0.5), ("incorrect", 0.0), ("correct", None),
        ("correct", None)]
    raised, none, nan, alloc = verdicts[6:]
    assert raised.outcome == "error" and raised.detail == "reward_fn raised RuntimeError: boom"
    assert none.outcome == nan.outcome == "error" and "NoneType" in none.detail and "finite" in nan.detail
    assert alloc.outcome == "error" and "MemoryError" in alloc.detail  # the address-space cap holds
    assert hang.outcome == "timeout" and hang_s < cfg.timeout_s + 1.0 and after.outcome == "correct"
    # the user's errors are the verifier's: the alarm counts them as it counts a grading crash
    assert check_verdicts(verdicts, 0.2, 0.5).errors == 4


@pytest.mark.slow
def test_the_pool_grades_with_the_users_function_and_skips_the_math_self_check(ray_cluster):
    from verifier import VerifierPool

    from verifier_targets import USER_REWARD  # tests/verifier is on sys.path

    pool = VerifierPool(VerifierConfig(num_workers=1, reward_fn=USER_REWARD, domain_from_problem=False))
    try:
        pool.self_check(["x", "y"])  # the math check would fail: "The answer is $\\boxed{x}$." != "x"
        verdicts = pool.grade(["question", "question", "score:0.5", "Lyon"], ["", "", "", "Paris"],
                              questions=["Q?", "other", None, None])
    finally:
        pool.shutdown()
    assert [(v.outcome, v.score) for v in verdicts] == [("correct", None), ("incorrect", None), ("correct", 0.5),
                                                         ("incorrect", None)]


# ------------------------------------------------------------------ float rewards in the filter

def test_float_rewards_are_r_and_correct_is_above_zero():
    from actors.types import Rollout
    from learner.config import AlgoConfig
    from learner.selection import select

    group = [Rollout("q", (1,), (2, 3), "", True, (), 0) for _ in range(4)]
    scores = [[0.9, 0.2, 0.0, -0.4]]
    correct = [[s > 0 for s in scores[0]]]
    sel = select([group], correct, AlgoConfig(mode="bc"), random.Random(0), scores=scores)
    assert sel.rewards[0] == pytest.approx([0.9, 0.2, 0.0, -0.4])
    # RLOO over the floats: A_i = r_i - mean of the others
    assert sel.advantages[0] == pytest.approx([0.9 - (-0.2 / 3), 0.2 - 0.5 / 3, 0.0 - 0.7 / 3, -0.4 - 1.1 / 3])
    pos, neg = sel.samples  # one with r > 0, one with r <= 0: the learner's classes (TrainSample.positive)
    assert pos.positive and pos.reward in (pytest.approx(0.9), pytest.approx(0.2))
    assert not neg.positive and neg.reward in (pytest.approx(0.0), pytest.approx(-0.4))
    # without scores: the outcome's +-1, as before
    assert select([group], correct, AlgoConfig(mode="bc"), random.Random(0)).rewards[0] == [1.0, 1.0, -1.0, -1.0]
