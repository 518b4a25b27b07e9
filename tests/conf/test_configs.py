"""Every YAML under conf/ composes into the typed TrainConfig; bad keys fail by name."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import ROOT, compose
from launch.config import TrainConfig, to_train_config

GROUPS = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "experiment")


# The tiny default's warm-up is for synthetic arithmetic only: another task needs a model of its own.
WITH = {("task", "math"): ["model=hf"]}


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))])
def test_every_option_composes(group, option):
    cfg = to_train_config(compose([f"{group}={option}", *WITH.get((group, option), [])]))
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = to_train_config(compose([f"+experiment={experiment}"]))
    assert cfg.steps > 0


def test_embedded_default_is_the_cpu_demo():
    cfg = to_train_config(compose())
    assert cfg.model.path is None and cfg.model.warmup.enabled
    assert cfg.learner.world_size == 2 and cfg.learner.zero_stage == 3 and cfg.learner.backend == "auto"
    assert cfg.algo.mode == "oreal" and cfg.wandb.mode == "offline"


def test_paper_preset_has_the_papers_defaults():
    cfg = to_train_config(compose(["+experiment=paper_7b"]))
    assert (cfg.rollout.n_samples, cfg.rollout.temperature, cfg.rollout.top_p) == (16, 1.0, 0.9)
    assert (cfg.algo.eta, cfg.algo.beta, cfg.algo.actor_freeze_steps) == (0.5, 0.01, 10)
    assert (cfg.learner.policy_optim.lr, cfg.learner.policy_optim.min_lr) == (5e-7, 1e-7)
    assert (cfg.learner.rm_optim.lr, cfg.learner.rm_optim.min_lr) == (2e-6, 4e-7)
    assert cfg.learner.policy_optim.warmup_steps == 10 and cfg.learner.policy_optim.weight_decay == 0.01
    assert cfg.learner.policy_optim.grad_clip == 1.0 and cfg.prompts_per_step == 64 and cfg.steps == 90


def test_unknown_key_is_rejected_by_name():
    with pytest.raises((ConfigCompositionException, ConfigKeyError), match="not_a_key"):
        compose(["learner.not_a_key=1"])


def test_wrong_type_is_rejected_by_name():
    with pytest.raises((ConfigCompositionException, ValidationError), match="steps"):
        compose(["steps=many"])


def test_bad_value_is_rejected_by_name():
    with pytest.raises(ValueError, match="algo.mode"):
        to_train_config(compose(["algo.mode=ppo"]))


def test_every_yaml_field_has_a_comment_above_it():
    """Like verl's CI: a reader of conf/ learns what each key does without the code."""
    missing = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.strip() or line.lstrip().startswith(("#", "-")) or line.startswith(" "):
                continue  # top-level keys only
            if line.split(":")[0] == "defaults":
                continue
            prev = lines[i - 1].strip() if i else ""
            if not prev.startswith("#") and not prev.endswith(":"):
                missing.append(f"{path.relative_to(ROOT)}:{i + 1}: {line}")
    assert not missing, "\n".join(missing)


def test_every_key_is_in_the_configuration_page():
    """docs/configuration.md lists every key of launch.train, each as `a.b.c`."""
    import dataclasses

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert [k for k in keys(TrainConfig) if f"`{k}`" not in page] == []


def test_issue31_metrics_are_documented():
    page = (ROOT / "docs" / "metrics.md").read_text()
    names = ("rollout/truncated_frac", "rollout/overlong_penalty_mean", "rollout/logprob_mismatch",
             "rollout/logprob_mismatch_max", "learner/tis_clipped_frac", "learner/tis_weight_mean")
    assert [n for n in names if f"`{n}`" not in page] == []
