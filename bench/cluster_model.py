"""`python -m bench.cluster_model`: hours for a `+experiment=paper_7b` run on a GPU cluster,
predicted from per-GPU throughputs, for the schedules this system can run.

A model, not a measurement: no GPU cluster is reachable from here. Every input is a named
figure with its source (`Figure.source`): public hardware specs, the sync estimate that
`bench.bench_sync` derives from its measured per-bucket cost, or an assumption stated as one.
`tests/gpu` replaces the assumed per-GPU figures with measured ones when a GPU is lent.

One step (docs/algorithm.md): B x K responses are generated, graded, the mixed queries' samples
trained on (policy fwd+bwd, reference fwd, token RM fwd+bwd), and the policy synced.
  decode_s = max(tokens / (rollout GPUs x decode tok/s per GPU),   # the batch's volume
                 longest response / single-sequence tok/s)         # its slowest sample
  train_s  = trained tokens x FLOPs per token / (train GPUs x peak x MFU)
Schedules on G GPUs:
  colocated: every GPU generates, then every GPU trains   step = decode(G) + verify + train(G) + sync
  split:     G/2 generate, G/2 train, one after the other step = decode(G/2) + verify + train(G/2) + sync
  pipelined: split, with generation of step t+1 during training of step t (algo.max_staleness=1)
             step = max(decode(G/2) + verify, train(G/2)) + sync
Writes results/cluster_model.json and prints a table next to the authors' reported hours.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from launch.state.provenance import invoked, stamp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


@dataclass(frozen=True)
class Figure:
    value: float
    source: str


# The run: +experiment=paper_7b (conf/experiment/paper_7b.yaml) and docs/algorithm.md.
RUN = {
    "steps": Figure(90, "docs/algorithm.md: 10 RM-only + 80 policy steps"),
    "queries": Figure(64, "conf/experiment/paper_7b.yaml prompts_per_step"),
    "samples": Figure(16, "docs/algorithm.md K"),
    "max_response_tokens": Figure(16384, "docs/algorithm.md: 16k"),
    "mean_response_tokens": Figure(1500, "assumption: math responses of a 7B instruct model, 16k cap"),
    "prompt_tokens": Figure(200, "assumption: a MATH problem in the chat template"),
    "trained_frac": Figure(0.5, "assumption: share of samples in mixed queries (the rest filtered)"),
    "params": Figure(7.6e9, "Qwen2.5-7B"),
}
# Hardware and software throughputs.
HW = {
    "gpus": Figure(32, "issue 13: 32 A100-80GB"),
    "peak_flops": Figure(312e12, "A100 bf16 dense peak (NVIDIA datasheet)"),
    "mfu": Figure(0.35, "assumption: ZeRO-3 training of a 7B at long sequences, 30-45% typical"),
    "decode_tok_s_per_gpu": Figure(2500, "assumption: vLLM 7B bf16 on one A100 at high concurrency, "
                                         "long contexts (public vLLM benchmarks: 2-4k output tok/s)"),
    "single_seq_tok_s": Figure(80, "assumption: one 7B sequence on an A100: 15.2 GB of weights read per "
                                   "token at 2 TB/s is 7.6 ms (130 tok/s), less overheads"),
    "verify_s": Figure(5, "bench_verifier: ~1 ms/sample on one core; 1024 samples over a pool, plus a "
                          "timeout tail"),
    # FLOPs per trained token: policy fwd+bwd (6N) + its recompute under checkpointing (2N),
    # reference fwd (2N), token RM (a 7B too) fwd+bwd+recompute (8N).
    "flops_per_token_per_param": Figure(18, "6N+2N policy, 2N reference, 8N token RM (learner/worker.py)"),
}
AUTHORS_HOURS = Figure(9.0, "issue 13: the authors' reported time for this run")


def sync_seconds(link_gbps: float = 100.0) -> Figure:
    """The 7B bucketed sync at `link_gbps`, from bench_sync's estimate (its measured per-bucket
    cost plus bytes on the wire), if that file is there; else the wire time alone."""
    path = RESULTS / "bench_sync.json"
    if path.is_file():
        for row in json.loads(path.read_text()).get("estimate", []):
            if row.get("model") == "7B" and row.get("link_gbps") == link_gbps:
                return Figure(row["bucketed_s"], f"results/bench_sync.json estimate, 7B at {link_gbps:g} Gbit/s")
    return Figure(15.24e9 * 8 / (link_gbps * 1e9), f"15.24 GB bf16 on the wire at {link_gbps:g} Gbit/s")


def step_parts(run: dict, hw: dict, rollout_gpus: float, train_gpus: float) -> dict[str, float]:
    """Seconds of one step's decode, verify and train on the given GPU counts."""
    v = {k: f.value for k, f in {**run, **hw}.items()}
    responses = v["queries"] * v["samples"]
    decode_volume = responses * v["mean_response_tokens"] / (rollout_gpus * v["decode_tok_s_per_gpu"])
    decode_tail = v["max_response_tokens"] / v["single_seq_tok_s"]
    trained = responses * v["trained_frac"] * (v["prompt_tokens"] + v["mean_response_tokens"])
    train = trained * v["flops_per_token_per_param"] * v["params"] / (train_gpus * v["peak_flops"] * v["mfu"])
    return {"decode_s": max(decode_volume, decode_tail), "decode_volume_s": decode_volume,
            "decode_tail_s": decode_tail, "verify_s": v["verify_s"], "train_s": train}


def schedules(run: dict = RUN, hw: dict = HW, sync: Figure | None = None) -> dict[str, dict[str, float]]:
    """Step seconds and run hours of each schedule."""
    g, sync_s = hw["gpus"].value, (sync or sync_seconds()).value
    whole, half = step_parts(run, hw, g, g), step_parts(run, hw, g / 2, g / 2)
    steps = {
        "colocated": whole["decode_s"] + whole["verify_s"] + whole["train_s"] + sync_s,
        "split": half["decode_s"] + half["verify_s"] + half["train_s"] + sync_s,
        "pipelined": max(half["decode_s"] + half["verify_s"], half["train_s"]) + sync_s,
    }
    parts = {"colocated": whole, "split": half, "pipelined": half}
    n = run["steps"].value
    return {name: {**parts[name], "sync_s": sync_s, "step_s": s, "hours": s * n / 3600} for name, s in steps.items()}


def table(result: dict[str, dict[str, float]]) -> str:
    head = f"{'schedule':<10} {'decode s':>9} {'(tail)':>7} {'train s':>8} {'sync s':>7} {'step s':>7} {'hours':>6}"
    rows = [f"{k:<10} {r['decode_s']:>9.0f} {r['decode_tail_s']:>7.0f} {r['train_s']:>8.0f} {r['sync_s']:>7.1f} "
            f"{r['step_s']:>7.0f} {r['hours']:>6.1f}" for k, r in result.items()]
    return "\n".join([head, *rows, f"{'authors':<10} {'':>9} {'':>7} {'':>8} {'':>7} {'':>7} {AUTHORS_HOURS.value:>6.1f}"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mean-response-tokens", type=float, default=RUN["mean_response_tokens"].value)
    ap.add_argument("--link-gbps", type=float, default=100.0, help="the weight-sync link (bench_sync estimate)")
    args = ap.parse_args(argv or [])
    run = {**RUN, "mean_response_tokens": Figure(args.mean_response_tokens, RUN["mean_response_tokens"].source
                                                 if args.mean_response_tokens == RUN["mean_response_tokens"].value
                                                 else "--mean-response-tokens")}
    sync = sync_seconds(args.link_gbps)
    result = schedules(run, HW, sync)
    print(table(result))
    out = {"schedules": result, "authors_hours": asdict(AUTHORS_HOURS), "sync": asdict(sync),
           "inputs": {k: asdict(f) for k, f in {**run, **HW}.items()},
           "note": "a model from stated figures, not a measurement; see bench/cluster_model.py"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster_model.json").write_text(
        json.dumps({"provenance": stamp(invoked("bench.cluster_model")), **out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
