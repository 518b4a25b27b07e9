"""Offline probe of the token RM's training regime: which supervision and optimisation let it
leave chance on the demo task, on responses it never trained on?

In the RL loop (`make demo`) the RM stays at chance: about 9 fresh kept pairs per step, each seen
once, one AdamW step per RL step at LR 5e-3. This probe replays that regime and alternatives
step by step, offline, in one process (plain PyTorch, no Ray or DeepSpeed):

1. Data, sampled ONCE from the starting policy (the demo's SFT warm-up, `prepare_policy`) with
   HF `generate` (the demo's temperature, top-p, max_new_tokens; K = rollout.n_samples) and
   graded by `verifier.grade`: a stream of `--steps` "RL steps" of B = prompts_per_step train
   problems each (more in the RM-only steps of a variant that draws more there; drawn as the
   loop draws them, `DriverState.next_queries`), and >= 200
   (correct, incorrect) pairs of held-out problems (`launch.evaluation.rm_heldout.pairs_of`, first wrong
   token from `launch.data.first_error`; the demo's 200 held-out problems give ~160 pairs per pass,
   so a second pass with fresh samples tops them up). The policy does NOT change here (the
   loop's does): this isolates the RM's supervision and optimisation from the policy's drift.
2. Per variant and seed, an RM (`TokenRewardModel` from the warm-up policy, zero head) trains as
   the loop's `learner.rm_data.rm_step_data` would feed it: step t's RM samples
   (`rm_samples_of`, kept pairs from `learner.selection.select`) -> `RMReplay` ->
   `rm_minibatches`, one AdamW step per mini-batch on `token_rm_loss` (weighted, normalised by
   the mini-batch's rm_weight sum); backbone at lr, head at lr x head_lr_mult, weight decay
   0.01, clip 1.0, `warmup_cosine` over all its updates (warm-up 5 RL steps' worth,
   floor lr/10). `heldout_metrics` (pair accuracy, BCE, first-error hit vs chance) at step 0,
   every `--every` steps and at the end.
3. Each variant is also written as the loop's Hydra overrides that give the same regime.
   `shuffled_labels` re-runs the best variant with the correct/incorrect flags permuted within
   each query: a control that must stay at chance (0.5 +- 0.05).

    python -m bench.rm_probe [--steps 100 --every 10 --seeds 0 1 --variants loop all ...]

Writes results/rm_probe.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from bench.bench_peer import RESULTS, compose_config, set_env

OUT_JSON = RESULTS / "rm_probe.json"
TARGETS = {"heldout_pair_accuracy": 0.85, "heldout_bce": 0.45, "first_error_hit": 0.6}
METRICS = ("heldout_pair_accuracy", "heldout_bce", "first_error_hit", "first_error_chance")
HELDOUT_PAIRS = 200
WARMUP_RL_STEPS = 5  # a variant's RM LR warm-up, in RL steps, unless it sets its own (warmup_rl)
CONTROL = "shuffled_labels"


@dataclass(frozen=True)
class Variant:
    samples: str = "pair"         # algo.rm_samples
    replay: int = 1               # algo.rm_replay_steps
    epochs: int = 1               # algo.rm_epochs
    minibatches: int = 1          # algo.rm_minibatches
    lr: float = 5e-3              # learner.rm_optim.lr (min_lr = lr / 10)
    head_mult: float = 1.0        # learner.rm_head_lr_mult
    max_pairs: int | None = None  # keep this many kept pairs a step (the loop's ~9; no override)
    shuffle: bool = False         # the control: labels permuted within each query
    smoothing: float = 0.0        # algo.rm_label_smoothing: BCE targets 1 - s/2 and s/2
    token_l2: float = 0.0         # algo.rm_token_l2: penalty on each token's squared score
    anchor: int = 0               # algo.rm_replay_anchor_steps: the first N steps' samples kept throughout
    warmup_rl: int = WARMUP_RL_STEPS  # the RM's LR warm-up, in RL steps (x updates_per_step optimiser steps)
    rm_only: int = 0              # algo.rm_only_steps: the first N steps, where the next two apply
    rm_only_queries: int | None = None  # algo.rm_only_prompts_per_step (None: prompts_per_step)
    rm_only_epochs: int | None = None   # algo.rm_only_epochs (None: epochs)

    @property
    def updates_per_step(self) -> int:
        return self.epochs * self.minibatches

    def algo(self):
        """The loop's `AlgoConfig` RM keys for this regime (its per-step passes and draws)."""
        from learner.config import AlgoConfig

        return AlgoConfig(rm_samples=self.samples, rm_replay_steps=self.replay, rm_epochs=self.epochs,
                          rm_minibatches=self.minibatches, rm_label_smoothing=self.smoothing,
                          rm_token_l2=self.token_l2, rm_replay_anchor_steps=self.anchor, rm_only_steps=self.rm_only,
                          rm_only_prompts_per_step=self.rm_only_queries, rm_only_epochs=self.rm_only_epochs)

    def overrides(self) -> list[str]:
        """The loop's Hydra overrides for this regime."""
        out = [f"algo.rm_samples={self.samples}", f"algo.rm_replay_steps={self.replay}",
               f"algo.rm_epochs={self.epochs}", f"algo.rm_minibatches={self.minibatches}",
               f"learner.rm_optim.lr={self.lr:g}", f"learner.rm_optim.min_lr={self.lr / 10:g}",
               f"learner.rm_optim.warmup_steps={self.warmup_rl * self.updates_per_step}",
               f"learner.rm_head_lr_mult={self.head_mult:g}", f"algo.rm_label_smoothing={self.smoothing:g}",
               f"algo.rm_token_l2={self.token_l2:g}", f"algo.rm_replay_anchor_steps={self.anchor}"]
        if self.rm_only:  # the RM-only steps and what they draw and pass over (else the config's)
            out += [f"algo.rm_only_steps={self.rm_only}",
                    f"algo.rm_only_prompts_per_step={_or_null(self.rm_only_queries)}",
                    f"algo.rm_only_epochs={_or_null(self.rm_only_epochs)}"]
        return out


def _or_null(value: int | None) -> str:
    return "null" if value is None else str(value)


DEMO_VARIANT = "rm_learns_a10_q96_e8"  # conf/rm/learns.yaml, key for key (tests/bench/test_rm_probe.py)

# One change at a time from the loop's regime, then the combinations that did best in a wider
# search (100 steps, seed 0: none reached the BCE target; heavier ones, e.g. all + replay 4 x
# 4 epochs x 2 mini-batches, cost minutes a seed here and did no better).
VARIANTS: dict[str, Variant] = {
    "loop": Variant(max_pairs=9),
    "all": Variant(samples="all"),
    "replay8": Variant(replay=8),
    "epochs4": Variant(epochs=4),
    "minibatches4": Variant(minibatches=4),
    "lr1e-3": Variant(lr=1e-3),
    "lr3e-4": Variant(lr=3e-4),
    "head10_lr1e-3": Variant(lr=1e-3, head_mult=10),
    "pair_r8_e2_m2_3e-4_h30": Variant(replay=8, epochs=2, minibatches=2, lr=3e-4, head_mult=30),
    "pair_r4_e4_m4_1e-3_h10": Variant(replay=4, epochs=4, minibatches=4, lr=1e-3, head_mult=10),
    "all_r2_e2_m8_3e-4_h10": Variant(samples="all", replay=2, epochs=2, minibatches=8, lr=3e-4, head_mult=10),
    # the demo's regime until the token-score penalty (the best at step 30 in the wider search, seed 0)
    "rm_learns": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10),
    # the same with the BCE's targets smoothed (algo.rm_label_smoothing): the RM's confidence bounded
    "pair_r4_e4_m4_1e-3_h10_ls0.2": Variant(replay=4, epochs=4, minibatches=4, lr=1e-3, head_mult=10, smoothing=0.2),
    "all_r2_e2_m8_3e-4_h10_ls0.2": Variant(samples="all", replay=2, epochs=2, minibatches=8, lr=3e-4, head_mult=10,
                                           smoothing=0.2),
    "rm_learns_ls0.2": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, smoothing=0.2),
    "rm_learns_ls0.4": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, smoothing=0.4),
    # the same with each token's squared score penalised (algo.rm_token_l2): the token scores
    # no longer swing far apart around the mean, so their drops can find the first error
    "rm_learns_l2_0.05": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.05),
    "rm_learns_l2_0.02": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.02),
    # that, with the first 10 steps' pairs (the RM-only steps') kept in the replay all run, and
    # the LR warmed up over one RL step
    "rm_learns_l2_0.02_a10": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.02,
                                     anchor=10, warmup_rl=1),
    # the demo's regime (conf/rm/learns.yaml, DEMO_VARIANT): that, with 3x the queries (96) and
    # 8 passes in each of the 10 RM-only steps
    "rm_learns_a10_q96_e8": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.02,
                                    anchor=10, warmup_rl=1, rm_only=10, rm_only_queries=96, rm_only_epochs=8),
    "rm_learns_l2_0.01": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.01),
    "rm_learns_ls0.2_l2_0.05": Variant(replay=8, epochs=4, minibatches=2, lr=1e-3, head_mult=10, smoothing=0.2,
                                       token_l2=0.05),
    "rm_learns_e8_l2_0.02": Variant(replay=8, epochs=8, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.02),
    "rm_learns_e8_l2_0.03": Variant(replay=8, epochs=8, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.03),
    "rm_learns_e8_l2_0.05": Variant(replay=8, epochs=8, minibatches=2, lr=1e-3, head_mult=10, token_l2=0.05),
}
NAMES = (*VARIANTS, CONTROL)


def shuffle_labels(correct: Sequence[Sequence[bool]], rng: random.Random) -> list[list[bool]]:
    """Each query's correct/incorrect flags permuted among its samples (the counts stay)."""
    out = []
    for row in correct:
        row = list(row)
        rng.shuffle(row)
        out.append(row)
    return out


def _sample(policy, tok, prompts: Sequence[str], cfg, k: int) -> list[list[list[int]]]:
    """K sampled responses per prompt (stop token kept when the response finished)."""
    import torch

    enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = policy.generate(**enc, do_sample=True, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                              top_k=0, max_new_tokens=cfg.rollout.max_new_tokens, num_return_sequences=k,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    rows = [r[: r.index(eos) + 1] if eos in r else [x for x in r if x != pad] for r in rows]
    return [rows[j * k:(j + 1) * k] for j in range(len(prompts))]


def sample_data(cfg, policy_path: str, splits, draws: Sequence[int], want: int):
    """(stream, heldout, passes, pad_id): stream[t] = (groups, correct) of RL step t, `draws[t]`
    queries; >= `want` held-out pairs, from as many passes over the held-out problems (K fresh
    samples each) as it takes."""
    import torch
    from transformers import AutoModelForCausalLM

    from actors.types import Rollout
    from launch.state.checkpoint import DriverState
    from launch.data.first_error import first_error_token
    from launch.evaluation.rm_heldout import pairs_of
    from launch.data.tasks import load_policy_tokenizer, task_prompt
    from verifier import grade

    tok = load_policy_tokenizer(policy_path)
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    torch.manual_seed(cfg.seed)
    k, B = cfg.rollout.n_samples, cfg.prompts_per_step

    def judged(problems):
        prompts = [task_prompt(tok, p.question, cfg.task) for p in problems]
        for p, text, rs in zip(problems, prompts, _sample(policy, tok, prompts, cfg, k)):
            ids = tuple(tok(text, add_special_tokens=False)["input_ids"])
            ok = [grade(tok.decode(r, skip_special_tokens=True), p.answer, finished=tok.eos_token_id in r,
                        question=p.question).correct for r in rs]
            yield p, ids, rs, ok

    state, stream = DriverState.start(cfg.seed), []
    for n in draws:
        groups, correct = [], []
        for p, ids, rs, ok in judged(state.next_queries(splits.train, n)):
            groups.append([Rollout(p.id, ids, tuple(r), "", tok.eos_token_id in r, (), 0) for r in rs])
            correct.append(ok)
        stream.append((groups, correct))
    rng, heldout, passes = random.Random(f"rm-heldout-{cfg.seed}"), [], 0
    while len(heldout) < want and passes < 10:  # the demo's 200 problems give ~160 pairs: fresh samples again
        passes += 1
        for start in range(0, len(splits.heldout), B):
            if len(heldout) >= want:
                break
            for p, ids, rs, ok in judged(splits.heldout[start:start + B]):
                heldout += pairs_of(p, ids, rs, ok, rng, lambda r, q=p.question: first_error_token(tok, q, r))
    return stream, heldout, passes, tok.pad_token_id or 0


def step_samples(v: Variant, groups, correct, rng: random.Random) -> list:
    """The RM's fresh samples of one RL step under `v` (what `rm_step_data` adds to the replay)."""
    from learner.config import AlgoConfig
    from learner.rm_data import rm_samples_of
    from learner.selection import select

    if v.shuffle:
        correct = shuffle_labels(correct, rng)
    sel = select(groups, correct, AlgoConfig(), rng)  # rewards +-1, one random correct + incorrect
    kept = sel.samples
    if v.max_pairs is not None and len(kept) > 2 * v.max_pairs:
        chosen = sorted(rng.sample(range(len(kept) // 2), v.max_pairs))
        kept = [s for i in chosen for s in kept[2 * i:2 * i + 2]]
    return rm_samples_of(groups, correct, kept, sel.rewards, sel.advantages, v.samples)


def score_heldout(rm, pairs, pad_id: int, chunk: int = 128) -> dict[str, float]:
    """`heldout_metrics` of the RM's raw per-position scores, as the loop reads them."""
    import torch

    from launch.evaluation.rm_heldout import heldout_metrics
    from learner.batch import collate

    samples, scores = [s for p in pairs for s in (p.pos, p.neg)], []
    rm.eval()
    with torch.no_grad():
        for i in range(0, len(samples), chunk):
            part = samples[i:i + chunk]
            b = collate(part, pad_id)
            out = rm(b.input_ids, b.attention_mask)
            scores += [out[j, len(s.prompt_ids) - 1:len(s.prompt_ids) + len(s.response_ids)].tolist()
                       for j, s in enumerate(part)]
    rm.train()
    got = heldout_metrics(pairs, scores)
    return {m: got.get(f"reward_model/{m}", float("nan")) for m in METRICS}


def train_variant(v: Variant, stream, heldout, init_path: str, pad_id: int, seed: int, steps: int,
                  every: int, prompts_per_step: int | None = None) -> dict[str, Any]:
    """One RM trained under `v` on the first `steps` steps of `stream` (the first
    `AlgoConfig.prompts_at(t)` queries of step t): its held-out curve."""
    import torch

    from learner.batch import collate
    from learner.config import OptimConfig
    from learner.deepspeed_config import warmup_cosine
    from learner.rm_data import RMReplay, rm_minibatches
    from reward_model.loss import score_columns, smoothed, token_rm_loss
    from reward_model.model import TokenRewardModel

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rm = TokenRewardModel.from_pretrained(init_path, dtype=torch.float32).train()
    head = [p for n, p in rm.named_parameters() if n.startswith("head.")]
    body = [p for n, p in rm.named_parameters() if not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body}, {"params": head, "lr": v.lr * v.head_mult}], lr=v.lr,
                            betas=(0.9, 0.999), weight_decay=0.01)
    algo = v.algo()
    sched = warmup_cosine(opt, OptimConfig(lr=v.lr, min_lr=v.lr / 10, warmup_steps=v.warmup_rl * v.updates_per_step),
                          algo.rm_updates_total(steps))
    replay, rng = RMReplay(v.replay, anchor_steps=v.anchor), random.Random(f"probe-{seed}")
    curve, n_fresh = [{"step": 0, **score_heldout(rm, heldout, pad_id)}], []
    for t in range(steps):
        n = algo.prompts_at(t, prompts_per_step)  # None: all of the step's
        groups, correct = stream[t]
        fresh = step_samples(v, groups[:n], correct[:n], rng)
        n_fresh.append(len(fresh))
        replay.add(fresh)
        order = random.Random(f"rm-{seed}-{t}")
        for mb in rm_minibatches(replay.samples(), algo.rm_epochs_at(t), v.minibatches, order):
            b = collate(mb, pad_id)
            scores = score_columns(rm(b.input_ids, b.attention_mask), "prefix_mean")
            loss, _ = token_rm_loss(scores, b.mask, smoothed((b.rewards > 0).float(), v.smoothing),
                                    n_seqs=sum(s.rm_weight for s in mb),
                                    weights=b.rm_weights, token_l2=v.token_l2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
            sched.step()
        if (t + 1) % every == 0 or t + 1 == steps:
            curve.append({"step": t + 1, **score_heldout(rm, heldout, pad_id)})
    return {"seed": seed, **{m: curve[-1][m] for m in METRICS}, "curve": curve,
            "rm_samples_per_step": sum(n_fresh) / max(1, len(n_fresh)), "seconds": time.perf_counter() - t0}


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / max(1, len(xs))


def summarise(name: str, v: Variant, runs: list[dict]) -> dict[str, Any]:
    """A variant's row: its overrides, per-seed runs, and the seed-mean end values and curve."""
    curve = [{"step": pt["step"], **{m: _mean([r["curve"][i][m] for r in runs]) for m in METRICS}}
             for i, pt in enumerate(runs[0]["curve"])]
    return {"variant": name, "overrides": v.overrides(), "settings": {**v.__dict__, "updates_per_step": v.updates_per_step},
            "runs": runs, "mean": {m: curve[-1][m] for m in METRICS}, "curve": curve,
            "seconds": sum(r["seconds"] for r in runs)}


def at_step(row: dict, step: int) -> dict[str, float]:
    """The row's seed-mean metrics at `step` (the last point at or before it)."""
    return [pt for pt in row["curve"] if pt["step"] <= step][-1]


def meets(point: dict[str, float]) -> bool:
    return (point["heldout_pair_accuracy"] >= TARGETS["heldout_pair_accuracy"]
            and point["heldout_bce"] <= TARGETS["heldout_bce"] and point["first_error_hit"] >= TARGETS["first_error_hit"])


def best_of(rows: Sequence[dict], early: int = 30) -> str:
    """Meets the targets at the end, then by step `early`, then the higher end pair accuracy."""
    cands = [r for r in rows if r["variant"] not in ("loop", CONTROL)] or list(rows)
    return max(cands, key=lambda r: (meets(r["mean"]), meets(at_step(r, early)), r["mean"]["heldout_pair_accuracy"],
                                     -r["mean"]["heldout_bce"]))["variant"]


def format_table(rows: Sequence[dict], steps: int, early: int = 30) -> str:
    cols = [s for s in dict.fromkeys((early, steps)) if s <= steps]
    head = f"{'variant':<24}" + "".join(f" | acc@{s:<4} bce@{s:<4} hit@{s:<4} chance" for s in cols) + " |   secs"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "".join(" | {heldout_pair_accuracy:8.3f} {heldout_bce:8.3f} {first_error_hit:8.3f} {first_error_chance:6.3f}"
                        .format(**at_step(r, s)) for s in cols)
        lines.append(f"{r['variant']:<24}{cells} | {r['seconds']:6.0f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.rm_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="RL steps replayed (B prompts each)")
    p.add_argument("--every", type=int, default=10, help="held-out scoring cadence, in steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(NAMES), help=f"subset of {', '.join(NAMES)}")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.every < 1:
        raise SystemExit("--steps and --every must be positive")
    unknown = [n for n in args.variants if n not in NAMES]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(NAMES)}")
    if args.variants == [CONTROL]:
        raise SystemExit(f"--variants: {CONTROL} re-runs the best of the other variants; name at least one")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit("--seeds must be distinct")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    set_env()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread ran 1.5-3x faster than two under contention
    try:
        return probe(args)
    finally:
        torch.set_num_threads(threads)


def probe(args: argparse.Namespace) -> dict:
    from launch.roles import prepare_policy
    from launch.data.tasks import load_task

    t0 = time.perf_counter()
    cfg = compose_config(["output_dir=outputs/rm_probe"])
    splits = load_task(cfg.task)
    policy = prepare_policy(cfg, splits)
    # each step's draws: the most any named variant takes (the others take the first of them)
    named = [VARIANTS[n].algo() for n in args.variants if n != CONTROL]
    draws = [max(a.prompts_at(t, cfg.prompts_per_step) for a in named) for t in range(args.steps)]
    stream, heldout, passes, pad_id = sample_data(cfg, policy, splits, draws, HELDOUT_PAIRS)
    sample_s = time.perf_counter() - t0
    pairs_per_step = _mean([sum(any(c) and not all(c) for c in correct) for _, correct in stream])
    print(f"sampled in {sample_s:.0f} s: {pairs_per_step:.1f} kept pairs per step, {len(heldout)} held-out pairs",
          flush=True)
    rows = []

    def run(name: str, v: Variant) -> None:
        rows.append(summarise(name, v, [train_variant(v, stream, heldout, policy, pad_id, s, args.steps, args.every,
                                                      cfg.prompts_per_step)
                                        for s in args.seeds]))
        m = rows[-1]["mean"]
        print(f"{name:<24} acc {m['heldout_pair_accuracy']:.3f} bce {m['heldout_bce']:.3f} hit "
              f"{m['first_error_hit']:.3f} (chance {m['first_error_chance']:.3f})  {rows[-1]['seconds']:.0f} s", flush=True)

    for name in [n for n in args.variants if n != CONTROL]:
        run(name, VARIANTS[name])
    best = best_of(rows)
    if CONTROL in args.variants:
        run(CONTROL, replace(VARIANTS[best], shuffle=True))
    best_row = next(r for r in rows if r["variant"] == best)
    report = {"best_variant": best, "best_overrides": VARIANTS[best].overrides(), "targets": TARGETS,
              "meets_targets_end": meets(best_row["mean"]), "meets_targets_step30": meets(at_step(best_row, 30)),
              "heldout_pairs": len(heldout), "heldout_passes": passes, "train_pairs_per_step": pairs_per_step,
              "settings": {"steps": args.steps, "every": args.every, "seeds": args.seeds,
                           "prompts_per_step": cfg.prompts_per_step, "k": cfg.rollout.n_samples,
                           "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p,
                           "max_new_tokens": cfg.rollout.max_new_tokens, "warmup_rl_steps": WARMUP_RL_STEPS,
                           "policy": str(policy), "sample_s": sample_s, "torch_threads": 1},
              "variants": rows, "total_s": time.perf_counter() - t0}
    print(format_table(rows, args.steps))
    print(f"best: {best} {VARIANTS[best].overrides()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from launch.state.provenance import invoked, stamp

    args.out.write_text(json.dumps({"provenance": stamp(invoked("bench.rm_probe")), **report}, indent=2) + "\n")
    print(f"wrote {args.out} ({report['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
