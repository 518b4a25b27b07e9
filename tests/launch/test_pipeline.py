"""One step off-policy (`algo.max_staleness=1`, launch.streaming.Prefetcher) with stand-in
roles (no Ray): step t+1 is generated while step t trains, on the weights before that update;
no sample more than one version old is trained on; on-policy steps are unchanged."""
from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest
import torch

from actors.types import Rollout
from launch.config import TrainConfig
from launch.loop import rl_step
from launch.data.problem import Problem
from launch.streaming import Prefetcher
from learner.config import AlgoConfig
from verifier.verdict import Verdict

K = 4
QUERIES = [[Problem(f"s{s}q{i}", "Compute.", str(i)) for i in range(2)] for s in range(4)]
PROMPT = {q.id: f"<{q.id}>" for step in QUERIES for q in step}


class _Rollout:
    """Samples carry the engine's weights version; generating takes 50 ms."""

    def __init__(self):
        self.version, self.generated = 0, []  # (query id, version, thread) of every query generated

    def stream(self, ids, prompts, **options):
        time.sleep(0.05)
        for i, qid in enumerate(ids):
            self.generated.append((qid, self.version, threading.current_thread().name))
            # sample k right iff k is even: every query is mixed
            answers = ["\\boxed{" + (qid[-1] if k % 2 == 0 else "9") + "}" for k in range(K)]
            yield i, [Rollout(qid, (1,), (3, 4), answers[k], True, (-1.0, -2.0), self.version) for k in range(K)]


class _Verifier:
    def grade(self, texts, golds, finished, questions=None):
        return [Verdict(t.endswith("{" + g + "}"), "correct" if t.endswith("{" + g + "}") else "incorrect",
                        None, 0.0, None) for t, g in zip(texts, golds)]


class _Learner:
    def __init__(self, rollout):
        self.rollout, self.trained = rollout, []  # (step, learner version, sample versions seen by it)

    def train_step(self, samples, step, rm_batches=None, rm_fresh=()):
        time.sleep(0.1)
        self.trained.append((step, self.rollout.version, [s.behaviour_logprobs for s in samples]))
        return {"learner/loss": 0.0}


class _Roles:
    def __init__(self):
        self.rollout, self.verifier = _Rollout(), _Verifier()
        self.learner = _Learner(self.rollout)
        self.ahead = Prefetcher(self)

    def take_faults(self):
        return {}


def _run(staleness: int, tmp_path) -> tuple[_Roles, list[dict]]:
    cfg = dataclasses.replace(TrainConfig(), prompts_per_step=2,
                              algo=AlgoConfig(mode="reinforce", max_staleness=staleness))
    roles, out = _Roles(), []
    for step in range(3):
        metrics, _, _ = rl_step(cfg, roles, QUERIES[step], PROMPT, [1], step, random.Random(0), run_dir=tmp_path,
                                next_queries=QUERIES[step + 1])
        out.append(metrics)
    return roles, out


def test_one_step_off_policy_generates_ahead_and_never_trains_on_older(tmp_path, versioned_sync):
    roles, metrics = _run(1, tmp_path)
    by_query = {qid: (version, thread) for qid, version, thread in roles.rollout.generated}
    # step 1 generated now; steps 2 and 3 during the previous step's training, on the old weights
    assert by_query["s0q0"][0] == 0 and not by_query["s0q0"][1].startswith("oreal-ahead")
    assert by_query["s1q0"] == (0, by_query["s1q0"][1]) and by_query["s1q0"][1].startswith("oreal-ahead")
    assert by_query["s2q0"][0] == 1 and by_query["s2q0"][1].startswith("oreal-ahead")
    # trained: the learner at version v saw samples of version v or v - 1, with their log-probs
    for (step, learner_version, lps), m in zip(roles.learner.trained, metrics):
        sample_version = by_query[f"s{step}q0"][0]
        assert 0 <= learner_version - sample_version <= 1
        assert all(lp == (-1.0, -2.0) for lp in lps)  # the engine's: the ratio's pi_old
        assert m["rollout/stale_dropped"] == 0
    assert [m.get("timing_s/generate_ahead") is not None for m in metrics] == [False, True, True]


def test_on_policy_generates_each_step_after_the_sync(tmp_path, versioned_sync):
    roles, metrics = _run(0, tmp_path)
    assert all(not t.startswith("oreal-ahead") for _, _, t in roles.rollout.generated)
    assert [learner_v for _, learner_v, _ in roles.learner.trained] == [0, 1, 2]
    # the engine's log-probs travel on-policy too (rollout/logprob_mismatch, algo.tis_cap); the
    # loss reads them as the ratio's pi_old only with max_staleness=1 (learner.worker)
    assert all(lp == (-1.0, -2.0) for _, _, lps in roles.learner.trained for lp in lps)


def test_prefetched_samples_too_old_are_generated_again():
    roles = _Roles()
    roles.ahead.prefetch(1, QUERIES[1], PROMPT, seed=0)  # generated on version 0
    roles.ahead.wait()
    roles.rollout.version = 2  # two updates since: staleness 2 > 1
    out = roles.ahead.take(1, QUERIES[1], PROMPT, seed=0, version=2, max_staleness=1)
    assert not out.ahead and roles.ahead.stale_dropped == 2 * K
    assert {r.policy_version for g in out.groups for r in g} == {2}


def test_off_policy_ratio_value_and_gradient_by_hand():
    """rho_t = exp(logp_t - logp_old_t): the negative term's value and its gradient rho_t * A- ..."""
    from learner.loss import negative_term

    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0]])
    mask, w, A, N, eta = torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1.0, 0.5]]), torch.tensor([-0.8]), torch.tensor(2.0), 0.5
    loss, _ = negative_term(logp, A, w, mask, N, eta, old)
    rho = [torch.exp(torch.tensor(0.5)).item(), torch.exp(torch.tensor(-1.0)).item()]
    expected = -eta * (-0.8) * (rho[0] * 1.0 + rho[1] * 0.5) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([-eta * -0.8 * rho[0] * 1.0 / 2, -eta * -0.8 * rho[1] * 0.5 / 2])
    # on-policy (no pi_old): the value is the constant, the gradient the same with rho = 1
    logp2 = logp.detach().clone().requires_grad_(True)
    loss0, _ = negative_term(logp2, A, w, mask, N, eta)
    loss0.backward()
    assert loss0.item() == pytest.approx(-eta * -0.8 * 1.5 / 2)
    assert logp2.grad.tolist()[0] == pytest.approx([-eta * -0.8 * 1.0 / 2, -eta * -0.8 * 0.5 / 2])


def test_collate_lays_behaviour_logprobs_in_the_loss_columns():
    from learner.batch import TrainSample, collate

    b = collate([TrainSample((7, 8), (1, 2, 3), -1.0, -0.5, behaviour_logprobs=(-0.1, -0.2, -0.3))], pad_id=0)
    assert b.mask.tolist() == [[0.0, 1.0, 1.0, 1.0]]
    assert b.engine_logprobs.tolist()[0] == pytest.approx([0.0, -0.1, -0.2, -0.3])
    assert collate([TrainSample((7, 8), (1, 2, 3), -1.0, -0.5)], pad_id=0).engine_logprobs is None
