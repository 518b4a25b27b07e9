"""bench_peer's TRL side: `GRPOTrainer` (CPU, `use_vllm=False`) on the same policy, prompts,
outcome reward (+1/-1 from `verifier.grade`, a cut completion -1) and held-out problems as our
loop, with our learner's optimiser and schedule (`trl_args`). trl is imported by `run_trl`
only."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from bench.peer_report import ForeignLoad, StepClock, summarise

# TRL's sequences per forward/backward (or B*K when smaller).
TRL_MICRO_BATCH = 64


def outcome_reward(completion: str, gold: str, finished: bool = True, correct_reward: float = 1.0,
                   incorrect_reward: float = -1.0) -> float:
    """Our loop's outcome reward: `verifier.grade(...).correct` -> +1, anything else -> -1."""
    from verifier import grade

    return correct_reward if grade(completion, gold, finished=finished).correct else incorrect_reward


class OutcomeReward:
    """TRL reward function (`reward_funcs=[OutcomeReward(...)]`): +1/-1 per completion.

    A completion whose ids do not end in the stop token was cut at max_completion_length:
    truncated, -1 (as our verifier grades it). Counts completions, generated tokens and
    correct answers per call, for the step clock.
    """

    def __init__(self, eos_token_id: int | None, correct_reward: float = 1.0, incorrect_reward: float = -1.0):
        self.__name__ = "outcome_reward"  # TRL names reward functions by __name__
        self.eos_token_id = eos_token_id
        self.correct_reward = correct_reward
        self.incorrect_reward = incorrect_reward
        self.samples = 0
        self.tokens = 0
        self.correct = 0

    def __call__(self, prompts=None, completions=(), completion_ids=None, answer=(), **_: Any) -> list[float]:
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        out = []
        for text, gold, cid in zip(completions, answer, ids):
            finished = True if cid is None or self.eos_token_id is None else bool(cid) and cid[-1] == self.eos_token_id
            r = outcome_reward(text, gold, finished, self.correct_reward, self.incorrect_reward)
            out.append(r)
            self.samples += 1
            self.tokens += len(cid) if cid is not None else 0
            self.correct += r == self.correct_reward
        return out


def _greedy_eval(model, tokenizer, prompts: Sequence[str], golds: Sequence[str], max_new_tokens: int,
                 batch_size: int = 64) -> float:
    """Held-out greedy pass@1 with HF generate (left padding), graded by verifier.grade."""
    import torch

    from verifier import grade

    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    correct = 0
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                batch = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True,
                                  add_special_tokens=False)
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                     pad_token_id=tokenizer.pad_token_id)
                for ids, gold in zip(out[:, batch["input_ids"].shape[1]:].tolist(), golds[i:i + batch_size]):
                    finished = eos in ids
                    ids = ids[: ids.index(eos)] if finished else ids
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    correct += grade(text, gold, finished=finished).correct
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return correct / max(1, len(prompts))


def trl_args(cfg, output_dir: Path, micro_batch: int | None = None) -> dict[str, Any]:
    """GRPOConfig keyword arguments equivalent to our config (B, K, lengths, sampling, optimiser)."""
    B, K = cfg.prompts_per_step, cfg.rollout.n_samples
    per_step = B * K
    # Default 64 sequences per forward/backward: faster for TRL here than our learner's 16
    # (small setting, 8 steps: 151-159 vs 133-150 samples/s).
    mb = micro_batch or min(per_step, TRL_MICRO_BATCH)
    if per_step % mb or mb % K:
        mb = per_step  # one micro-batch of the whole step
    opt = cfg.learner.policy_optim
    return dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=mb, gradient_accumulation_steps=per_step // mb,
        num_generations=K, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=0,
        num_iterations=1, beta=cfg.algo.beta, use_vllm=False,
        learning_rate=opt.lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": opt.min_lr},
        warmup_steps=opt.warmup_steps, weight_decay=opt.weight_decay, adam_beta1=opt.betas[0],
        adam_beta2=opt.betas[1], max_grad_norm=opt.grad_clip, optim="adamw_torch",
        max_steps=cfg.steps, logging_steps=1, report_to="none", save_strategy="no", seed=cfg.seed,
        dataloader_num_workers=0, disable_tqdm=True,
    )


def run_trl(cfg, model_path: str, run_dir: Path, micro_batch: int | None = None) -> dict[str, Any]:
    """TRL GRPOTrainer on the same policy, prompts, reward and held-out problems."""
    t0 = time.perf_counter()  # start-up includes importing trl (a first run in this process)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from launch.data.tasks import build_prompt, load_task

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    splits = load_task(cfg.task)
    system = cfg.task.system_prompt
    heldout = splits.heldout[: cfg.eval_size or None]
    eval_prompts = [build_prompt(tokenizer, p.question, system) for p in heldout]
    eval_golds = [p.answer for p in heldout]
    dataset = Dataset.from_list([{"prompt": build_prompt(tokenizer, p.question, system), "answer": p.answer}
                                 for p in splits.train])
    reward = OutcomeReward(tokenizer.eos_token_id, cfg.algo.reward_correct, cfg.algo.reward_incorrect)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = GRPOConfig(**trl_args(cfg, run_dir, micro_batch))
    clock = StepClock()
    probe = ForeignLoad()
    max_new = cfg.rollout.max_new_tokens
    times: dict[str, float] = {}

    def evaluate(m, step: int) -> None:
        t = time.perf_counter()
        pass1 = _greedy_eval(m, tokenizer, eval_prompts, eval_golds, max_new)
        clock.evaluated(time.perf_counter() - t, pass1, step)
        probe.mark()

    class Clock(TrainerCallback):
        seen = (0, 0, 0)

        def on_train_begin(self, args, state, control, model=None, **kw):
            times["train_begin"] = time.perf_counter()
            if heldout:
                evaluate(model, 0)
            clock.start()
            probe.mark()

        def on_step_end(self, args, state, control, model=None, **kw):
            n, tok, ok = reward.samples - self.seen[0], reward.tokens - self.seen[1], reward.correct - self.seen[2]
            self.seen = (reward.samples, reward.tokens, reward.correct)
            clock.step(n, tok, ok / n if n else None, foreign_cpu_frac=probe.interval())
            step = state.global_step
            if heldout and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                evaluate(model, step)

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    built = time.perf_counter()
    trainer.train()
    startup_s = (built - t0) + (times["train_begin"] - built)
    if heldout and (not clock.evals or clock.evals[-1]["step"] != len(clock.steps)):
        evaluate(trainer.model, len(clock.steps))
    out = summarise(clock.steps, clock.evals, startup_s)
    out["grpo_config"] = {k: v for k, v in trl_args(cfg, run_dir, micro_batch).items() if k != "output_dir"}
    return out
