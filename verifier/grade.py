"""`grade()`: one completion against one gold answer -> one `Verdict`. Pure and total.

It never raises and never stringifies a parsed object, but it has no deadline of its own:
sympy can run for minutes on adversarial input. The driver therefore grades through
`VerifierPool`, which runs this function in deadline-bounded subprocesses.

>>> grade("... so the total is \\\\boxed{1,018}.", "#### 1018").outcome
'correct'
>>> grade("... \\\\boxed{7}", "7", finished=False).outcome
'truncated'
>>> grade("\\\\boxed{\\\\sqrt{x^2}}", "x", question="Let $x$ be a positive real number.").outcome
'correct'
"""
from __future__ import annotations

import time

from verifier.config import VerifierConfig
from verifier.domain import problem_domain
from verifier.equivalence import equivalent
from verifier.extract import extract_answer, gold_answer
from verifier.normalize import nesting_depth
from verifier.verdict import Verdict

_DEFAULT_CFG = VerifierConfig()


def check_answer_size(answer: str, cfg: VerifierConfig) -> str | None:
    """Why an answer is too big to parse (None when it is fine)."""
    if len(answer) > cfg.max_answer_chars:
        return f"answer has {len(answer)} chars > max_answer_chars={cfg.max_answer_chars}"
    depth = nesting_depth(answer)
    if depth > cfg.max_nesting:
        return f"answer nests {depth} deep > max_nesting={cfg.max_nesting}"
    return None


def symbol_domain(question: str | None, cfg: VerifierConfig) -> str:
    """The domain a problem's symbols are compared in: what `question` states
    (`verifier.domain.problem_domain`) with verifier.domain_from_problem, else, or where it
    states none, verifier.symbol_domain."""
    if not (cfg.domain_from_problem and question):
        return cfg.symbol_domain
    return problem_domain(question, cfg.symbol_domain)


def grade(completion: str, gold: str, *, finished: bool = True,
          cfg: VerifierConfig | None = None, question: str | None = None) -> Verdict:
    """Grade `completion` against `gold` (any benchmark format, see extract.gold_answer).
    `question`, the problem's text (optional), sets the domain of free symbols where it states
    one (`symbol_domain`)."""
    cfg = cfg or _DEFAULT_CFG
    t0 = time.perf_counter()
    answer = None
    try:
        answer = extract_answer(completion, cfg.max_completion_chars)
        if not finished:
            return Verdict.failed("truncated", "response did not end with the stop token",
                                  answer, time.perf_counter() - t0)
        if answer is None:
            return Verdict.failed("no_answer", "no \\boxed{} and no 'the answer is'",
                                  None, time.perf_counter() - t0)
        too_big = check_answer_size(answer, cfg)
        if too_big:
            return Verdict.failed("incorrect", too_big, answer, time.perf_counter() - t0)
        gold_text = gold_answer(gold)
        gold_too_big = check_answer_size(gold_text, cfg)
        if gold_too_big:
            return Verdict.failed("error", "gold " + gold_too_big, answer, time.perf_counter() - t0)
        domain = symbol_domain(question, cfg)
        ok, note = equivalent(gold_text, answer, cfg.approx_min_sig_digits, domain)
        if domain != cfg.symbol_domain:
            note = f"{note}; " if note else ""
            note += f"symbols {domain} (the problem says so)"
        return Verdict(ok, "correct" if ok else "incorrect", answer, time.perf_counter() - t0, note)
    except (Exception, RecursionError, MemoryError) as e:  # total: one verdict on every path
        return Verdict.failed("error", f"{type(e).__name__}: {str(e)[:200]}", answer,
                              time.perf_counter() - t0)
