"""`launch.loop.rl_step` with stand-in roles (no Ray): every sample lands in the rollout
record, and a broken verifier stops the step before the learner sees it."""
from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from actors.types import Rollout
from launch import records
from launch.config import TrainConfig
from launch.loop import rl_step
from launch.data.problem import Problem
from learner.config import AlgoConfig
from verifier import VerifierAlarm, VerifierConfig
from verifier.verdict import Verdict

B, K = 2, 4


class _Rollout:
    version = 0

    def stream(self, ids, prompts, **options):  # the queries finish in reverse order
        for i in reversed(range(len(ids))):
            yield i, [Rollout(ids[i], (1, 2), (3, 4, 5), f"{ids[i]} says {k}", True, (), 0) for k in range(K)]


class _Verifier:
    def __init__(self, outcomes):
        self.outcomes = outcomes

    def grade(self, texts, golds, finished, questions=None):  # one query's K samples per call (launch.streaming)
        assert len(texts) == K
        ids = [q.id for q in QUERIES]
        picked = [self.outcomes[ids.index(t.split()[0]) * K + int(t.split()[-1])] for t in texts]
        return [Verdict(o == "correct", o, None, 0.0, None if o in ("correct", "incorrect") else "broken")
                for o in picked]


class _Learner:
    def __init__(self):
        self.calls = []

    def train_step(self, samples, step, rm_batches=None, rm_fresh=()):
        self.calls.append((len(samples), step))
        return {"learner/loss": 0.5}


class _Roles:
    def __init__(self, outcomes):
        from launch.streaming import Prefetcher

        self.rollout, self.verifier, self.learner = _Rollout(), _Verifier(outcomes), _Learner()
        self.ahead = Prefetcher(self)

    def take_faults(self) -> dict[str, float]:
        return {"faults/rollout_engine_restarts": 0.0}


@pytest.fixture
def no_sync(monkeypatch):
    import learner.weight_sync as ws

    report = ws.SyncReport(1, 0.0, 10, 1, 0.0)
    monkeypatch.setattr(ws, "sync_weights", lambda *a, **k: report)


def _cfg(warn=0.2, stop=0.5):
    return dataclasses.replace(TrainConfig(), prompts_per_step=B, algo=AlgoConfig(mode="reinforce"),
                               verifier=VerifierConfig(warn_frac=warn, stop_frac=stop))


QUERIES = [Problem("a", "Compute 1 + 1.", "2"), Problem("b", "Compute 2 + 2.", "4")]
PROMPT = {"a": "<a>", "b": "<b>"}


def _step(roles, cfg, tmp_path, step=0):
    return rl_step(cfg, roles, QUERIES, PROMPT, [1, 2, 3], step, random.Random(0), run_dir=tmp_path)


def test_a_healthy_step_records_every_sample_and_trains(tmp_path, no_sync):
    roles = _Roles(["correct", "incorrect"] * 4)
    metrics, groups, correct = _step(roles, _cfg(), tmp_path)
    assert roles.learner.calls == [(B * K, 0)]
    assert metrics["verifier/alarm"] == 0.0 and metrics["verifier/failure_frac"] == 0.0
    assert metrics["rollout/samples"] == B * K and "timing_s/records" in metrics
    rows, problems = records.check_run(tmp_path)
    assert problems == [] and rows == [records.summary_row(1, records.read_step(records.step_file(tmp_path, 1))[0], None)]
    assert rows[0]["samples"] == B * K and rows[0]["kept"] == B * K


def test_past_warn_frac_the_step_warns_and_still_trains(tmp_path, no_sync, caplog):
    roles = _Roles(["correct", "incorrect", "incorrect", "timeout"] * 2)  # 2 of 8 = 0.25
    with caplog.at_level(logging.WARNING, logger="oreal"):
        metrics, _, _ = _step(roles, _cfg(), tmp_path, step=4)
    assert metrics["verifier/alarm"] == 1.0 and metrics["verifier/failure_frac"] == pytest.approx(0.25)
    assert roles.learner.calls == [(B * K, 4)]
    assert "step 5: verifier failed on 2 of 8 samples" in caplog.text and "verifier.warn_frac=0.2" in caplog.text


def test_past_stop_frac_the_learner_never_sees_the_step(tmp_path, no_sync):
    roles = _Roles(["error"] * 6 + ["correct", "incorrect"])  # a dead verifier: 6 of 8 failed
    with pytest.raises(VerifierAlarm, match=r"step 3: verifier failed on 6 of 8 .*verifier\.stop_frac=0\.5") as err:
        _step(roles, _cfg(), tmp_path, step=2)
    assert roles.learner.calls == []  # never trained on all-wrong rewards
    assert err.value.step == 3 and err.value.check.errors == 6
    rows = records.read_step(records.step_file(tmp_path, 3))[0]  # the audit still has every sample
    assert len(rows) == B * K and not any(r["kept"] for r in rows)
    assert {r["why"] for r in rows} == {"verifier_alarm"} and [r["outcome"] for r in rows][:6] == ["error"] * 6
    assert records.check_run(tmp_path)[1] == []


def test_stop_frac_one_never_stops(tmp_path, no_sync):
    roles = _Roles(["error"] * 8)
    metrics, _, _ = _step(roles, _cfg(warn=1.0, stop=1.0), tmp_path)
    assert metrics["verifier/alarm"] == 0.0 and roles.learner.calls == [(B * K, 0)]
