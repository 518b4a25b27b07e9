"""Training mode and real gradient checkpointing, in one in-process learner rank (gloo,
ZeRO-3, no Ray). `from_pretrained` returns eval mode, DeepSpeed keeps it, and transformers
only checkpoints layers in training mode: so check, during `train_step`, which mode each
model is in and that every decoder layer of the policy and the RM really is checkpointed."""
from __future__ import annotations

import os

import pytest

from conftest import separable_group

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learners():
    """Two learners on the same tiny model: checkpointing on (RM: null = as the policy) / off."""
    import deepspeed.comm
    import torch

    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from learner.config import AlgoConfig, LearnerConfig, OptimConfig
    from learner.worker import LearnerWorker

    saved = dict(os.environ)
    path = ensure_tiny_model(TinyModelConfig())
    out = {}
    for checkpointing in (True, False):
        # Large LRs so that the second step's policy loss, KL and gradients are far from 0.
        cfg = LearnerConfig(world_size=1, backend="gloo", micro_batch_size=4, gradient_checkpointing=checkpointing,
                            policy_optim=OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=0),
                            rm_optim=OptimConfig(lr=1e-1, min_lr=1e-2, warmup_steps=0))
        w = LearnerWorker(0, cfg, AlgoConfig(mode="oreal", actor_freeze_steps=0), path, seed=0, total_steps=4)
        w.setup(*w.master_address())  # the second finds the process group already up
        out[checkpointing] = w
    yield out
    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()  # DeepSpeed's call: releases its group references too
    os.environ.clear()
    os.environ.update(saved)


def micro_batches():
    samples, counts = separable_group()
    return [samples[0::2], samples[1::2]], counts  # two micro-batches, positives and negatives in each


def decoder_layers(module):
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in module.modules() if isinstance(m, GradientCheckpointingLayer)]


class Probe:
    """Records each model's `training` flag at every forward, how often each decoder layer's
    checkpoint function is called and how often the layer itself runs."""

    def __init__(self, engines: dict):
        self.modes = {name: [] for name in engines}
        self.checkpoint_calls = {name: 0 for name in engines}
        self.layer_runs = {name: 0 for name in engines}
        self.layers = {name: decoder_layers(e.module) for name, e in engines.items()}
        self._undo = []
        for name, e in engines.items():
            self._hook(e.module.register_forward_pre_hook(lambda m, args, n=name: self.modes[n].append(m.training)))
            for layer in self.layers[name]:
                # a PRE-hook: the recompute stops early once it has what backward needs, so the
                # layer's forward hook would not fire on it
                self._hook(layer.register_forward_pre_hook(lambda *_, n=name: self._count(self.layer_runs, n)))
                if "_gradient_checkpointing_func" in vars(layer):
                    real = layer._gradient_checkpointing_func

                    def counted(*args, real=real, n=name, **kwargs):
                        self._count(self.checkpoint_calls, n)
                        return real(*args, **kwargs)

                    layer._gradient_checkpointing_func = counted
                    self._undo.append(lambda layer=layer, real=real: setattr(layer, "_gradient_checkpointing_func", real))

    def _hook(self, handle):
        self._undo.append(handle.remove)

    @staticmethod
    def _count(counter, name):
        counter[name] += 1

    def remove(self):
        for undo in self._undo:
            undo()


@pytest.fixture(scope="module")
def first_step(learners):
    """Step 0 on both learners, the checkpointing one under the probe: (probe, metrics on / off)."""
    mbs, counts = micro_batches()
    w = learners[True]
    probe = Probe({"policy": w.policy, "rm": w.rm, "ref": w.ref})
    try:
        on = w.train_step(mbs, counts, 0)
    finally:
        probe.remove()
    return probe, on, learners[False].train_step(mbs, counts, 0)


def test_train_step_trains_in_training_mode_and_checkpoints_every_layer(first_step):
    probe, _, _ = first_step
    n_fwd = len(micro_batches()[0])  # one forward (and one backward) per micro-batch for each model
    assert probe.modes == {"policy": [True] * n_fwd, "rm": [True] * n_fwd, "ref": [False] * n_fwd}
    for name in ("policy", "rm"):
        n_layers = len(probe.layers[name])
        assert n_layers == 2
        # The checkpointed layer function runs once per layer per forward; the layer body runs
        # twice: in the forward and again when the backward recomputes it (non-reentrant).
        assert probe.checkpoint_calls[name] == n_layers * n_fwd, name
        assert probe.layer_runs[name] == 2 * n_layers * n_fwd, name
    assert probe.checkpoint_calls["ref"] == 0 and probe.layer_runs["ref"] == len(probe.layers["ref"]) * n_fwd


def test_rm_checkpointing_defaults_to_the_policys(learners):
    from learner.config import LearnerConfig

    assert LearnerConfig().rm_gradient_checkpointing is None
    for checkpointing, w in learners.items():
        for engine in (w.policy, w.rm):
            assert all(layer.gradient_checkpointing == checkpointing for layer in decoder_layers(engine.module))


def test_checkpointing_changes_no_number(learners, first_step):
    """Same losses, entropy and gradient norms with and without checkpointing, over three steps
    (the later ones with a trained RM head, a moved policy and a non-zero KL)."""
    mbs, counts = micro_batches()
    _, on, off = first_step
    results = [(on, off)] + [tuple(learners[c].train_step(mbs, counts, step) for c in (True, False))
                             for step in (1, 2)]
    for step, (on, off) in enumerate(results):
        assert on.keys() == off.keys()
        for key in on:
            assert on[key] == pytest.approx(off[key], rel=1e-5, abs=1e-9), (step, key)
    assert abs(on["learner/kl"]) > 0 and on["learner/grad_norm"] > 0 and on["reward_model/grad_norm"] > 0
