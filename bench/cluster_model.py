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
Each again with partial rollouts (`rollout.partial`, `<schedule>_partial`): the engines stop
once `partial_budget` of the samples have ended, so the slowest sample's time is replaced by
about the budget's quantile of response lengths, and the cut samples' remaining tokens decode
in later steps beside the next batches (`carried_volume_s`): in the steady state a step
decodes as many tokens as without them, so the volume bound stays (`partial_parts`).
Writes results/cluster_model.json and prints a table next to the authors' reported hours.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
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
# Partial rollouts: actors/config.py's defaults.
PARTIAL = {
    "partial_budget": Figure(0.9, "rollout.partial_budget default (actors/config.py)"),
    "partial_max_age": Figure(4, "rollout.partial_max_age default (actors/config.py)"),
}


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


def length_sigma(run: dict) -> Figure:
    """The log-normal shape of response lengths (mean `mean_response_tokens`) whose expected
    longest of a step's B x K responses is `max_response_tokens`, the issue's ~205 s at 80
    tok/s: the longest of n draws sits near the 1 - 1/n quantile z, and
    mean x exp(z sigma - sigma^2 / 2) = max gives sigma."""
    n = run["queries"].value * run["samples"].value
    z = NormalDist().inv_cdf(1 - 1 / n)
    ratio = math.log(run["max_response_tokens"].value / run["mean_response_tokens"].value)
    sigma = z - math.sqrt(z * z - 2 * ratio)
    return Figure(sigma, f"derived: the longest of {n:g} log-normal responses of mean "
                         f"{run['mean_response_tokens'].value:g} reaches {run['max_response_tokens'].value:g} tokens")


class Lengths:
    """Response lengths min(L, cap), L log-normal of mean `mean` and shape `sigma`."""

    def __init__(self, mean: float, sigma: float, cap: float):
        self.mean, self.sigma, self.cap = mean, sigma, cap
        self.mu = math.log(mean) - sigma ** 2 / 2

    def above(self, x: float) -> float:
        """P(length > x)."""
        return 0.0 if x >= self.cap else 1 - NormalDist(self.mu, self.sigma).cdf(math.log(max(x, 1e-9)))

    def quantile(self, p: float) -> float:
        return min(self.cap, math.exp(self.mu + self.sigma * NormalDist().inv_cdf(p)))

    def upto(self, x: float) -> float:
        """E[min(length, x)]: the tokens a sample decodes in its first x."""
        x = math.log(min(x, self.cap))
        return self.mean * NormalDist(self.mu + self.sigma ** 2, self.sigma).cdf(x) \
            + math.exp(x) * (1 - NormalDist(self.mu, self.sigma).cdf(x))


def partial_parts(run: dict, hw: dict, rollout_gpus: float, partial: dict = PARTIAL) -> dict[str, float]:
    """One steady-state step's decode with partial rollouts, lengths log-normal (`length_sigma`).

    The engines stop once `partial_budget` b of the step's samples (N fresh, C carried) have
    ended, t seconds in: every running sample has then decoded tau = t x single-sequence tok/s
    tokens more. A sample of length L is cut in its first ceil(L / tau) - 1 steps and ends in
    the next, or is dropped with its query when that is past `partial_max_age` A more steps
    (`dropped_query_frac`). In the steady state as many samples end as start, so
        P(L <= (A+1) tau) = b (1 + sum_{a=1..A} P(L > a tau))      (C = N sum_a P(L > a tau))
    gives tau (`cut_tokens`; near the budget's quantile of lengths, `quantile_tokens`: carried
    samples count in the budget, and most of them end). A step decodes its fresh samples' first
    tau tokens (`fresh_volume_s`) and the carried samples' next ones (`carried_volume_s`):
    together the whole volume, less the dropped samples' tail. decode = max(volume, t)."""
    v = {k: f.value for k, f in {**run, **hw, **partial}.items()}
    lengths = Lengths(v["mean_response_tokens"], length_sigma(run).value, v["max_response_tokens"])
    b, age = v["partial_budget"], int(v["partial_max_age"])

    def surplus(tau: float) -> float:  # ended minus what the budget asks: increasing in tau
        return 1 - lengths.above((age + 1) * tau) - b * (1 + sum(lengths.above(a * tau) for a in range(1, age + 1)))

    lo, hi = 1.0, lengths.cap
    for _ in range(100):
        lo, hi = (lo, (lo + hi) / 2) if surplus((lo + hi) / 2) >= 0 else ((lo + hi) / 2, hi)
    tau = hi
    # seconds per token of each sample, at the volume step_parts has for the mean length
    per_token = v["queries"] * v["samples"] * v["mean_response_tokens"] / lengths.upto(lengths.cap) / (
        rollout_gpus * v["decode_tok_s_per_gpu"])
    fresh, total = lengths.upto(tau), lengths.upto((age + 1) * tau)
    cut_s = tau / v["single_seq_tok_s"]
    return {"decode_s": max(total * per_token, cut_s), "decode_volume_s": total * per_token, "decode_cut_s": cut_s,
            "fresh_volume_s": fresh * per_token, "carried_volume_s": (total - fresh) * per_token,
            "cut_tokens": tau, "quantile_tokens": lengths.quantile(b),
            "carried_per_fresh": sum(lengths.above(a * tau) for a in range(1, age + 1)),
            "dropped_query_frac": 1 - (1 - lengths.above((age + 1) * tau)) ** v["samples"]}


def schedules(run: dict = RUN, hw: dict = HW, sync: Figure | None = None,
              partial: dict = PARTIAL) -> dict[str, dict[str, float]]:
    """Step seconds and run hours of each schedule, and of each with partial rollouts."""
    g, sync_s = hw["gpus"].value, (sync or sync_seconds()).value
    whole, half = step_parts(run, hw, g, g), step_parts(run, hw, g / 2, g / 2)
    parts = {"colocated": whole, "split": half, "pipelined": half}
    for name, gpus in (("colocated", g), ("split", g / 2), ("pipelined", g / 2)):
        cut = partial_parts(run, hw, gpus, partial)  # the same train, verify and sync
        parts[f"{name}_partial"] = {**parts[name], **cut, "decode_tail_s": cut["decode_cut_s"]}
    steps = {name: (max(p["decode_s"] + p["verify_s"], p["train_s"]) if name.startswith("pipelined")
                    else p["decode_s"] + p["verify_s"] + p["train_s"]) + sync_s for name, p in parts.items()}
    n = run["steps"].value
    return {name: {**parts[name], "sync_s": sync_s, "step_s": s, "hours": s * n / 3600} for name, s in steps.items()}


def table(result: dict[str, dict[str, float]]) -> str:
    """(tail): the longest response's seconds, or with partial rollouts the budget's quantile's."""
    head = f"{'schedule':<18} {'decode s':>9} {'(tail)':>7} {'train s':>8} {'sync s':>7} {'step s':>7} {'hours':>6}"
    rows = [f"{k:<18} {r['decode_s']:>9.0f} {r['decode_tail_s']:>7.0f} {r['train_s']:>8.0f} {r['sync_s']:>7.1f} "
            f"{r['step_s']:>7.0f} {r['hours']:>6.1f}" for k, r in result.items()]
    return "\n".join([head, *rows, f"{'authors':<18} {'':>9} {'':>7} {'':>8} {'':>7} {'':>7} {AUTHORS_HOURS.value:>6.1f}"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mean-response-tokens", type=float, default=RUN["mean_response_tokens"].value)
    ap.add_argument("--link-gbps", type=float, default=100.0, help="the weight-sync link (bench_sync estimate)")
    ap.add_argument("--partial-budget", type=float, default=PARTIAL["partial_budget"].value)
    args = ap.parse_args(argv or [])
    run = {**RUN, "mean_response_tokens": Figure(args.mean_response_tokens, RUN["mean_response_tokens"].source
                                                 if args.mean_response_tokens == RUN["mean_response_tokens"].value
                                                 else "--mean-response-tokens")}
    partial = {**PARTIAL, "partial_budget": Figure(args.partial_budget, "--partial-budget")
               if args.partial_budget != PARTIAL["partial_budget"].value else PARTIAL["partial_budget"]}
    sync = sync_seconds(args.link_gbps)
    result = schedules(run, HW, sync, partial)
    print(table(result))
    cut = result["pipelined_partial"]
    print(f"partial rollouts (budget {partial['partial_budget'].value:g}, steady state): lengths log-normal, "
          f"sigma {length_sigma(run).value:.2f}; cut {cut['cut_tokens']:.0f} tokens in (the budget's quantile: "
          f"{cut['quantile_tokens']:.0f}); {cut['carried_per_fresh']:.2f} carried samples per fresh one, "
          f"{cut['carried_volume_s'] / cut['decode_volume_s']:.0%} of the tokens; "
          f"{cut['dropped_query_frac']:.1%} of the queries dropped")
    out = {"schedules": result, "authors_hours": asdict(AUTHORS_HOURS), "sync": asdict(sync),
           "inputs": {k: asdict(f) for k, f in {**run, **HW, **partial, "length_sigma": length_sigma(run)}.items()},
           "note": "a model from stated figures, not a measurement; see bench/cluster_model.py"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster_model.json").write_text(
        json.dumps({"provenance": stamp(invoked("bench.cluster_model")), **out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
