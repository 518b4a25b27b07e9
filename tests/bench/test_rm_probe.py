"""bench/rm_probe.py: the label-shuffle control, the variants' loop overrides, each step's RM
samples, one RM trained on separable data, the table / JSON keys and the CLI's checks (the
probe itself runs with `python -m bench.rm_probe`; a tiny real run is marked slow)."""
import json
import random
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import rm_probe  # noqa: E402


def test_shuffle_labels_keeps_each_querys_counts_and_moves_flags():
    correct = [[True, False, False, True, False, False, False, True]] * 50 + [[False] * 8]
    out = rm_probe.shuffle_labels(correct, random.Random(0))
    assert [sum(r) for r in out] == [sum(r) for r in correct] and [len(r) for r in out] == [8] * 51
    assert any(o != c for o, c in zip(out, correct))
    assert correct[0] == [True, False, False, True, False, False, False, True]  # input untouched


def _apply(overrides):
    """The overrides as AlgoConfig / LearnerConfig keyword arguments (values typed as Hydra's YAML)."""
    algo, learner, optim = {}, {}, {}
    for o in overrides:
        key, value = o.split("=", 1)
        group, *rest = key.split(".")
        value = yaml.safe_load(value)
        if group == "algo":
            algo[rest[0]] = value
        elif rest[0] == "rm_optim":
            optim[rest[1]] = float(value) if rest[1] in ("lr", "min_lr") else value
        else:
            learner[rest[0]] = value
    return algo, learner, optim


@pytest.mark.parametrize("name", list(rm_probe.VARIANTS))
def test_each_variants_overrides_are_the_loops_config_keys(name):
    from learner.config import AlgoConfig, LearnerConfig, OptimConfig

    v = rm_probe.VARIANTS[name]
    algo, learner, optim = _apply(v.overrides())
    a = AlgoConfig(**algo)
    lc = LearnerConfig(rm_optim=OptimConfig(**optim), **learner)
    assert (a.rm_samples, a.rm_replay_steps, a.rm_epochs, a.rm_minibatches) == (v.samples, v.replay, v.epochs,
                                                                               v.minibatches)
    assert a.rm_updates_per_step == v.updates_per_step
    assert lc.rm_optim.lr == pytest.approx(v.lr) and lc.rm_optim.min_lr == pytest.approx(v.lr / 10)
    assert lc.rm_optim.warmup_steps == v.warmup_rl * v.updates_per_step
    assert lc.rm_head_lr_mult == pytest.approx(v.head_mult)
    assert (a.rm_token_l2, a.rm_replay_anchor_steps) == (pytest.approx(v.token_l2), v.anchor)
    assert a.rm_schedule(20) == v.algo().rm_schedule(20)  # the RM-only steps' passes too
    if v.rm_only:
        assert (a.actor_freeze_steps, a.rm_only_prompts_per_step, a.rm_only_epochs) == (v.rm_only, v.rm_only_queries,
                                                                                     v.rm_only_epochs)


def test_loop_variant_is_the_paper_regime_on_the_demo():
    v = rm_probe.VARIANTS["loop"]
    assert (v.samples, v.replay, v.updates_per_step, v.lr, v.head_mult, v.max_pairs) == ("pair", 1, 1, 5e-3, 1.0, 9)
    from conftest import compose
    from launch.config import to_train_config

    paper = to_train_config(compose(["rm=paper"]))
    assert (paper.algo.rm_samples, paper.algo.rm_updates_per_step, paper.learner.rm_optim.lr) == ("pair", 1, 5e-3)


def test_demo_variant_is_the_demos_regime():
    """conf/rm/learns.yaml (the demo's default) is the probe's DEMO_VARIANT row, key for key."""
    from conftest import compose
    from launch.config import to_train_config

    demo = to_train_config(compose())
    v = rm_probe.VARIANTS[rm_probe.DEMO_VARIANT]
    a, lc = demo.algo, demo.learner
    assert (a.rm_samples, a.rm_replay_steps, a.rm_epochs, a.rm_minibatches) == (v.samples, v.replay, v.epochs,
                                                                               v.minibatches)
    assert (lc.rm_optim.lr, lc.rm_optim.min_lr, lc.rm_head_lr_mult) == (pytest.approx(v.lr),
                                                                         pytest.approx(v.lr / 10), v.head_mult)
    assert lc.rm_optim.warmup_steps == v.warmup_rl * v.updates_per_step
    assert (a.rm_token_l2, a.rm_replay_anchor_steps, a.actor_freeze_steps) == (pytest.approx(v.token_l2), v.anchor,
                                                                               v.rm_only)
    assert (a.rm_only_prompts_per_step, a.rm_only_epochs) == (v.rm_only_queries, v.rm_only_epochs)
    assert [demo.prompts_at(t) for t in range(12)] == [v.algo().prompts_at(t, demo.prompts_per_step) for t in range(12)]


def _stream(n_queries: int, seed: int):
    """Groups of 8 whose correct responses use one block of tokens and wrong ones another."""
    from actors.types import Rollout

    rng = random.Random(seed)
    groups, correct = [], []
    for q in range(n_queries):
        prompt = tuple(rng.randrange(10, 100) for _ in range(5))
        ok = [rng.random() < 0.5 for _ in range(8)]
        ok[0], ok[1] = True, False  # every query mixed
        groups.append([Rollout(f"q{q}", prompt, tuple(rng.randrange(100, 140) if c else rng.randrange(300, 340)
                                                      for _ in range(6)), "", True, (), 0) for c in ok])
        correct.append(ok)
    return groups, correct


def test_step_samples_pairs_capped_all_weighted_and_control_keeps_counts():
    groups, correct = _stream(20, 0)
    loop = rm_probe.step_samples(rm_probe.VARIANTS["loop"], groups, correct, random.Random(0))
    assert len(loop) == 18 and [s.reward for s in loop] == [1.0, -1.0] * 9
    assert all(a.prompt_ids == b.prompt_ids for a, b in zip(loop[0::2], loop[1::2]))
    pairs = rm_probe.step_samples(rm_probe.VARIANTS["lr1e-3"], groups, correct, random.Random(0))
    assert len(pairs) == 40
    every = rm_probe.step_samples(rm_probe.VARIANTS["all"], groups, correct, random.Random(0))
    assert len(every) == 160
    assert sum(s.rm_weight for s in every if s.reward > 0) == pytest.approx(20)  # 1 per class per query
    control = rm_probe.Variant(samples="all", shuffle=True)
    shuffled = rm_probe.step_samples(control, groups, correct, random.Random(0))
    assert sum(s.reward > 0 for s in shuffled) == sum(map(sum, correct))
    by_token = [(s.response_ids[0] < 200) == (s.reward > 0) for s in shuffled]
    assert 0.3 < sum(by_token) / len(by_token) < 0.9  # labels no longer follow the tokens


def _heldout(n: int, seed: int):
    from launch.evaluation.rm_heldout import HeldoutPair
    from learner.batch import TrainSample

    groups, _ = _stream(n, seed)
    return [HeldoutPair(f"h{i}", TrainSample(g[0].prompt_ids, g[0].response_ids, 1.0, 0.0),
                        TrainSample(g[1].prompt_ids, g[1].response_ids, -1.0, 0.0), first_error=2)
            for i, g in enumerate(groups)]


def test_train_variant_learns_separable_data_and_reports_the_curve():
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    path = ensure_tiny_model(TinyModelConfig())
    stream = [_stream(8, s) for s in range(6)]
    v = rm_probe.Variant(samples="all", replay=2, epochs=2, minibatches=2, lr=1e-3, head_mult=10)
    r = rm_probe.train_variant(v, stream, _heldout(16, 99), path, pad_id=0, seed=0, steps=6, every=4)
    assert [pt["step"] for pt in r["curve"]] == [0, 4, 6]
    assert r["curve"][0]["heldout_pair_accuracy"] == 0.5  # the zero head: all ties
    assert r["heldout_pair_accuracy"] >= 0.9 and r["heldout_bce"] < r["curve"][0]["heldout_bce"]
    assert set(rm_probe.METRICS) <= set(r) and r["rm_samples_per_step"] == 64


def test_train_variant_draws_more_and_passes_more_in_the_rm_only_steps(monkeypatch):
    """rm_only_queries / rm_only_epochs: the RM-only steps take that many of the step's queries
    and make that many passes; the others take prompts_per_step and make `epochs` passes."""
    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model
    from learner import rm_data

    passes = []
    real = rm_data.rm_minibatches
    monkeypatch.setattr(rm_data, "rm_minibatches", lambda s, epochs, *a: passes.append(epochs) or real(s, epochs, *a))
    stream = [_stream(6, s) for s in range(3)]  # every step holds 6 queries
    v = rm_probe.Variant(replay=2, epochs=1, lr=1e-3, rm_only=1, rm_only_queries=6, rm_only_epochs=3)
    assert [v.algo().prompts_at(t, 4) for t in range(3)] == [6, 4, 4] and v.algo().rm_schedule(3) == [3, 1, 1]
    r = rm_probe.train_variant(v, stream, _heldout(4, 99), ensure_tiny_model(TinyModelConfig()), pad_id=0, seed=0,
                               steps=3, every=3, prompts_per_step=4)
    assert passes == [3, 1, 1]
    assert r["rm_samples_per_step"] == pytest.approx((12 + 8 + 8) / 3)  # one kept pair per query taken


def _row(name, accs, bce=0.3, hit=0.7):
    curve = [{"step": s, "heldout_pair_accuracy": a, "heldout_bce": bce, "first_error_hit": hit,
              "first_error_chance": 0.2} for s, a in zip((0, 30, 100), accs)]
    run = {"seed": 0, **{m: curve[-1][m] for m in rm_probe.METRICS}, "curve": curve, "seconds": 2.0}
    return rm_probe.summarise(name, rm_probe.VARIANTS.get(name, rm_probe.Variant()), [run, dict(run, seed=1)])


def test_rows_table_and_best_variant():
    rows = [_row("loop", (0.5, 0.9, 0.95)), _row("all", (0.5, 0.7, 0.9)), _row("lr3e-4", (0.5, 0.86, 0.88)),
            _row("epochs4", (0.5, 0.9, 0.99), bce=0.6)]
    assert rm_probe.best_of(rows) == "lr3e-4"  # loop excluded; meets at 30 beats a higher end accuracy
    row = rows[1]
    assert set(row) >= {"variant", "overrides", "runs", "mean", "curve", "seconds"}
    assert set(row["mean"]) == set(rm_probe.METRICS) and row["seconds"] == 4.0
    assert rm_probe.at_step(row, 30)["heldout_pair_accuracy"] == 0.7
    assert rm_probe.at_step(row, 50)["step"] == 30
    table = rm_probe.format_table(rows, 100)
    assert "acc@30" in table and "acc@100" in table and table.count("\n") == len(rows) + 1
    json.dumps(rows)  # what the report holds is JSON


@pytest.mark.parametrize("argv, match", [(["--steps", "0"], "must be positive"), (["--every", "0"], "must be positive"),
                                         (["--variants", "nope"], "unknown"),
                                         (["--variants", "shuffled_labels"], "at least one"),
                                         (["--seeds", "1", "1"], "distinct")])
def test_cli_rejects_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        rm_probe.main(argv)


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(rm_probe, "HELDOUT_PAIRS", 4)
    out = tmp_path / "rm_probe.json"
    rm_probe.main(["--steps", "2", "--every", "1", "--seeds", "0", "--variants", "lr1e-3", "shuffled_labels",
                   "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["best_variant"] == "lr1e-3" and [r["variant"] for r in report["variants"]] == ["lr1e-3",
                                                                                                "shuffled_labels"]
    assert report["heldout_pairs"] >= 4 and report["train_pairs_per_step"] > 0 and report["total_s"] > 0
    assert [pt["step"] for pt in report["variants"][0]["curve"]] == [0, 1, 2]
