"""Offline probe of the token RM on the demo task: can it learn to tell right from wrong?

Samples K=8 responses per training problem from the demo's warm-up policy, keeps one
correct/incorrect pair per mixed problem (as oreal.md step 4 does), holds a quarter of the
pairs out, and trains `TokenRewardModel` with `token_rm_loss` (plain PyTorch, AdamW) at each
learning rate, from two backbones: the warm-up policy itself (as in the run) and a warm-up
on a flawless teacher (it knows the carries the policy gets wrong). Reports held-out pair
accuracy (sequence score of the correct response above the wrong one) every `--every`
steps. Writes results/rm_probe.json.

    python -m bench.rm_probe --lrs 1e-3 5e-3 --steps 120
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.bench_peer import RESULTS, compose_config, set_env

OUT_JSON = RESULTS / "rm_probe.json"


def sample_pairs(policy_path: str, cfg, problems, k: int = 8, batch: int = 32):
    """(correct, incorrect) TrainSample pairs of the mixed problems, sampled like a rollout."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from launch.tasks import build_prompt
    from learner.batch import TrainSample
    from verifier import grade

    tok = AutoTokenizer.from_pretrained(policy_path)
    tok.padding_side = "left"
    eos = tok.eos_token_id
    policy = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    torch.manual_seed(0)  # the same pairs every run
    rng = random.Random(0)
    pairs = []
    for i in range(0, len(problems), batch):
        chunk = problems[i:i + batch]
        prompts = [build_prompt(tok, p.question, cfg.task.system_prompt) for p in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = policy.generate(**enc, do_sample=True, temperature=cfg.rollout.temperature,
                                  top_p=cfg.rollout.top_p, top_k=0, max_new_tokens=cfg.rollout.max_new_tokens,
                                  num_return_sequences=k, pad_token_id=tok.pad_token_id, eos_token_id=eos)
        responses = out[:, enc["input_ids"].shape[1]:].tolist()
        for j, p in enumerate(chunk):
            prompt_ids = tuple(tok(prompts[j], add_special_tokens=False)["input_ids"])
            right, wrong = [], []
            for r in responses[j * k:(j + 1) * k]:
                finished = eos in r
                r = r[: r.index(eos) + 1] if finished else [x for x in r if x != tok.pad_token_id]
                ok = grade(tok.decode(r, skip_special_tokens=True), p.answer, finished=finished).correct
                (right if ok else wrong).append(tuple(r))
            if right and wrong:
                pairs.append((TrainSample(prompt_ids, rng.choice(right), 1.0, 1.0),
                              TrainSample(prompt_ids, rng.choice(wrong), -1.0, -1.0)))
    return pairs, tok.pad_token_id or 0


def train_rm(init_path: str, train, test, pad_id: int, lr: float, steps: int, every: int,
             pairs_per_step: int = 16) -> list[float]:
    """Held-out pair accuracy every `every` steps of RM training from `init_path`."""
    import torch

    from learner.batch import collate
    from reward_model.loss import sequence_score, token_rm_loss
    from reward_model.model import TokenRewardModel

    torch.manual_seed(0)
    rm = TokenRewardModel.from_pretrained(init_path, dtype=torch.float32)
    opt = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=0.01)
    held = collate([s for pr in test for s in pr], pad_id)
    rng = random.Random(1)
    accs = []
    for step in range(1, steps + 1):
        b = collate([s for pr in rng.sample(train, min(pairs_per_step, len(train))) for s in pr], pad_id)
        loss, _ = token_rm_loss(rm(b.input_ids, b.attention_mask)[:, :-1], b.mask, (b.rewards > 0).float())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % every == 0:
            with torch.no_grad():
                score = sequence_score(rm(held.input_ids, held.attention_mask)[:, :-1], held.mask)
            accs.append((score[0::2] > score[1::2]).float().mean().item())
    return accs


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.rm_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 5e-3])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--every", type=int, default=40)
    p.add_argument("--problems", type=int, default=480, help="training problems sampled (K=8 each)")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.every < 1 or any(lr <= 0 for lr in args.lrs):
        raise SystemExit("--steps, --every and every --lrs value must be positive")
    set_env()
    from launch.roles import prepare_policy
    from launch.tasks import load_task

    t0 = time.perf_counter()
    cfg = compose_config(["output_dir=outputs/rm_probe"])
    flawless = compose_config(["output_dir=outputs/rm_probe", "task.teacher_slip=0"])
    splits = load_task(cfg.task)
    policy = prepare_policy(cfg, splits)
    backbones = {"warm-up policy (the run's RM init)": policy,
                 "flawless-teacher warm-up": prepare_policy(flawless, load_task(flawless.task))}
    pairs, pad_id = sample_pairs(policy, cfg, splits.train[: args.problems])
    random.Random(0).shuffle(pairs)
    test, train = pairs[: len(pairs) // 4], pairs[len(pairs) // 4:]
    print(f"{len(train)} training pairs, {len(test)} held-out", flush=True)
    runs = []
    for name, path in backbones.items():
        for lr in args.lrs:
            accs = train_rm(path, train, test, pad_id, lr, args.steps, args.every)
            runs.append({"backbone": name, "lr": lr, "steps": list(range(args.every, args.steps + 1, args.every)),
                         "heldout_pair_accuracy": accs})
            print(f"{name:<36} lr {lr:g}: " + ", ".join(f"step {s} {a:.3f}" for s, a in
                                                      zip(runs[-1]["steps"], accs)), flush=True)
    report = {"train_pairs": len(train), "heldout_pairs": len(test), "pairs_per_step": 16, "runs": runs,
              "total_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
