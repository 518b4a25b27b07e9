"""Supervised warm-up: fine-tune the initial policy on worked solutions before RL.

The paper's RL starts from a fine-tuned policy; a random tiny model never answers right,
so every query would be all-wrong and OREAL (which learns only from mixed queries) would
have nothing to learn from. A short SFT on the task's worked solutions puts the initial
pass rate between 0 and 1. Single process, plain torch: for the tiny default, not for 7B
models (those arrive fine-tuned). The result is cached by a hash of everything it depends on.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class WarmupConfig:
    # Run the warm-up (the tiny demo does; a real fine-tuned policy does not need it).
    enabled: bool = False
    # Optimiser steps and sequences per step.
    steps: int = 300
    batch_size: int = 32
    # AdamW peak LR (linear warm-up over 5% of steps, then cosine to 10%).
    lr: float = 3e-3
    weight_decay: float = 0.0
    # Train problems used (0 = all of the train split).
    num_examples: int = 0
    seed: int = 0
    # Intra-op CPU threads while it trains. Fixed, not the machine's core count: float sums
    # split over a different number of threads round differently, and over 2000 steps that
    # moved the demo's starting held-out pass@1 by points. Part of the cache key.
    threads: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.threads < 1:
            raise ValueError("warmup.steps, warmup.batch_size, warmup.lr and warmup.threads must be positive")


def cache_key(model_path: str, examples: Sequence[tuple[str, str]], cfg: WarmupConfig) -> str:
    data = hashlib.sha256("\0".join(p + "\1" + r for p, r in examples).encode()).hexdigest()
    weights = Path(model_path) / "model.safetensors"
    model_id = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else model_path
    key = {"model": model_id, "data": data, "cfg": asdict(cfg), "recipe": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def ensure_warmup_model(model_path: str, examples: Sequence[tuple[str, str]], cfg: WarmupConfig,
                        cache_root: str | os.PathLike | None = None) -> str:
    """Path of `model_path` fine-tuned on (prompt, response) pairs; built once, then cached."""
    from launch.model.cache import build_once
    from launch.model.cache import default_cache_root

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return build_once(root / f"warmup-{cache_key(model_path, examples, cfg)}",
                      lambda tmp: sft(model_path, examples, cfg, tmp))


def sft(model_path: str, examples: Sequence[tuple[str, str]], cfg: WarmupConfig, out_dir: str | os.PathLike) -> dict:
    """Next-token cross-entropy on the response tokens only (the stop token included).
    Same inputs, same `cfg.threads`, same torch build and CPU kind: the same weights, bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _sft(model_path, examples, cfg, out_dir)
    finally:
        torch.set_num_threads(threads)


def _sft(model_path: str, examples: Sequence[tuple[str, str]], cfg: WarmupConfig, out_dir: str | os.PathLike) -> dict:
    import math

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.train()
    rows = []
    for prompt, response in examples:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p, r))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, cfg.steps - warm))))
    losses = []
    bar = tqdm(range(cfg.steps), desc="SFT warm-up", unit="step", dynamic_ncols=True)
    for _ in bar:
        batch = rng.sample(rows, min(cfg.batch_size, len(rows)))
        L = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), L), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), L), -100, dtype=torch.long)
        att = torch.zeros((len(batch), L), dtype=torch.long)
        for i, (p, r) in enumerate(batch):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
            att[i, : len(p) + len(r)] = 1
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    stats = {"first_loss": losses[0], "last_loss": sum(losses[-10:]) / len(losses[-10:]), "steps": cfg.steps}
    (Path(out_dir) / "warmup.json").write_text(json.dumps(stats))
    return stats
