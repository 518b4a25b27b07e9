"""Scoring and the outputs of `launch.eval`: grading through the verifier pool, answer
clusters for maj@k (equivalence decided by the verifier, deadline-bounded), the table,
eval.json, eval.md. samples.jsonl rows are made here too."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from launch.evaluation.config import EvalConfig
from launch.evaluation.passk import ProblemSamples, sampled_metrics
from launch.data.problem import Problem


class Scorer:
    """One benchmark's graded responses, added a round of problems at a time."""

    def __init__(self, name: str, cfg: EvalConfig, verifier):
        self.name, self.cfg, self.verifier = name, cfg, verifier
        self.greedy: list[tuple[bool, bool, int]] = []  # (correct, finished, response tokens)
        self.sampled: list[ProblemSamples] = []
        self.sample_tokens: list[int] = []
        self.same: dict[tuple[str, str], bool] = {}  # (earlier answer, later answer) -> equivalent

    def add(self, problems: Sequence[Problem], greedy, sampled) -> list[dict]:
        """Grade one round (greedy: one rollout group per problem or None; sampled: n each or
        None) and return its samples.jsonl rows."""
        flat = []  # (problem, kind, index, rollout)
        for i, p in enumerate(problems):
            if greedy is not None:
                flat.append((p, "greedy", 0, greedy[i][0]))
            for j, r in enumerate(sampled[i] if sampled is not None else []):
                flat.append((p, "sample", j, r))
        verdicts = self.verifier.grade([r.response_text for *_, r in flat], [p.answer for p, *_ in flat],
                                       [r.finished for *_, r in flat], questions=[p.question for p, *_ in flat])
        rows, per_problem = [], {}
        for (p, kind, j, r), v in zip(flat, verdicts):
            rows.append({"benchmark": self.name, "problem_id": p.id, "kind": kind, "sample": j,
                         "gold": p.answer, "response": r.response_text, "answer": v.answer,
                         "outcome": v.outcome, "correct": v.correct, "finished": r.finished,
                         "response_tokens": len(r.response_ids), "question": p.question})
            if kind == "greedy":
                self.greedy.append((v.correct, r.finished, len(r.response_ids)))
            else:
                per_problem.setdefault(p.id, []).append((v, r))
                self.sample_tokens.append(len(r.response_ids))
        groups = list(per_problem.values())
        self._judge_pairs([[self._vote(v, r) for v, r in g] for g in groups])
        for g in groups:
            self.sampled.append(ProblemSamples(tuple(self._vote(v, r) for v, r in g),
                                               tuple(v.correct for v, _ in g), tuple(r.finished for _, r in g)))
        return rows

    @staticmethod
    def _vote(verdict, rollout) -> str | None:
        """The answer a sample votes for in maj@k: none when truncated or without an answer."""
        return verdict.answer if rollout.finished and verdict.answer else None

    def _judge_pairs(self, answer_lists: list[list[str | None]]) -> None:
        """Ask the verifier pool, in one batch, whether each earlier distinct answer of a
        problem equals each later one (gold = the earlier, as `passk.cluster` asks)."""
        from verifier.normalize import normalize

        pairs = []
        for answers in answer_lists:
            distinct: dict[str, int] = {}
            for a in answers:
                if a is not None:
                    distinct[a] = distinct.get(a, 0) + 1
            by_count = sorted(distinct, key=lambda a: -distinct[a])[: self.cfg.max_cluster_answers]
            order = [a for a in distinct if a in by_count]  # first-appearance order
            for x, a in enumerate(order):
                for b in order[x + 1:]:
                    if (a, b) in self.same:
                        continue
                    if normalize(a) == normalize(b):
                        self.same[(a, b)] = True
                    else:
                        pairs.append((a, b))
        if pairs:
            verdicts = self.verifier.grade([f"\\boxed{{{b}}}" for _, b in pairs], [a for a, _ in pairs],
                                           [True] * len(pairs))
            self.same.update({pair: v.correct for pair, v in zip(pairs, verdicts)})

    def _same(self, a: str, b: str) -> bool:
        if (a, b) in self.same:
            return self.same[(a, b)]
        from verifier.normalize import normalize  # a rare answer past max_cluster_answers: text only

        return normalize(a) == normalize(b)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"problems": float(max(len(self.greedy), len(self.sampled)))}
        if self.greedy:
            m = len(self.greedy)
            out["greedy_pass@1"] = sum(c for c, _, _ in self.greedy) / m
            out["greedy_truncated_frac"] = sum(not f for _, f, _ in self.greedy) / m
            out["greedy_response_length/mean"] = sum(t for *_, t in self.greedy) / m
        if self.sampled:
            out.update(sampled_metrics(self.sampled, self.cfg.ks, self._same))
            out["response_length/mean"] = sum(self.sample_tokens) / len(self.sample_tokens)
        return out


def columns(cfg: EvalConfig) -> list[str]:
    cols = ["problems"]
    if cfg.greedy:
        cols += ["greedy_pass@1", "greedy_truncated_frac"]
    if cfg.n:
        cols += ["pass@1"] + [f"pass@{k}" for k in cfg.ks if k > 1] + [f"maj@{k}" for k in cfg.ks]
        cols += ["truncated_frac"]
    return cols


def markdown_table(results: dict[str, dict], cfg: EvalConfig) -> str:
    """One row per benchmark; rates in percent with one decimal."""
    cols = columns(cfg)
    head = {"greedy_pass@1": "greedy pass@1", "greedy_truncated_frac": "greedy truncated",
            "truncated_frac": "truncated", "pass@1": f"pass@1 (n={cfg.n})"}
    lines = ["| benchmark | " + " | ".join(head.get(c, c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, m in results.items():
        cells = [f"{int(m[c])}" if c == "problems" else f"{100 * m[c]:.1f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(run_dir: Path, report: dict, table: str) -> None:
    (run_dir / "eval.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (run_dir / "eval.md").write_text(f"# Evaluation of {report['model']}\n\n{table}\n")
