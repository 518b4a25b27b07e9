"""Where a response to the synthetic arithmetic task (`launch.data.tasks`) first goes wrong.

A token reward model that credits tokens well should see its score fall at the first wrong
token, so the arith task, whose worked solutions are checkable step by step
(``47 + 38 = 85. 85 - 19 = 66. The answer is \\boxed{66}.``), gives a ground truth for that
(`reward_model.instruments.first_error_hit`). Each step is judged against the response's OWN
previous result, so one slip is blamed once, where it happens, not again at every later step.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

_QUESTION = re.compile(r"(\d+)((?:[ \t]*[+-][ \t]*\d+)+)", re.ASCII)
# One token per number, operator, "=", "\boxed{", "The answer", or other non-space char: a
# single left-to-right pass (no backtracking over digit runs), so linear in the text.
_LEX = re.compile(r"\d+|\\boxed\{|The answer|\S", re.ASCII)
_MAX_DIGITS = 1000  # larger question numbers are not this task (and int() would refuse them)


def _num(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _diff(start: int, written: str, expected: str) -> int | None:
    """Offset of the first char of `written` (at `start`) that differs from `expected`; a
    `written` that is a strict prefix is wrong where `expected` goes on. None when equal."""
    if written == expected:
        return None
    i = next((j for j, (a, b) in enumerate(zip(written, expected)) if a != b), min(len(written), len(expected)))
    return start + i


def _steps(tokens: list[re.Match], text: str) -> list[list[tuple[str, int]]]:
    """Steps ``x op y = z`` as [(field, offset)] * 4; x and z may carry a '-' written against them."""
    steps, i, n = [], 0, len(tokens)

    def number(j: int) -> tuple[tuple[str, int], int] | None:
        if j < n and tokens[j].group() == "-" and j + 1 < n and _num(tokens[j + 1].group()) \
                and tokens[j + 1].start() == tokens[j].end():
            return (text[tokens[j].start():tokens[j + 1].end()], tokens[j].start()), j + 2
        if j < n and _num(tokens[j].group()):
            return (tokens[j].group(), tokens[j].start()), j + 1
        return None

    while i < n:
        x = number(i)
        if x and x[1] + 3 < n:
            j = x[1]
            op, y, eq = tokens[j], tokens[j + 1], tokens[j + 2]
            z = number(j + 3)
            if op.group() in "+-" and _num(y.group()) and eq.group() == "=" and z:
                steps.append([x[0], (op.group(), op.start()), (y.group(), y.start()), z[0]])
                i = z[1]
                continue
        i += 1
    return steps


def arith_first_error(question: str, response: str) -> int | None:
    """Offset in `response` of the first character that goes wrong, or None: "no known first
    error" (right all the way, or not in the worked-steps format at all: no step, no box).

    Step i (``x op y = z``) must start from the question's first number (step 1) or the previous
    step's z, use the question's i-th operator and (i+1)-th number, and have z = x op y; the
    first field that differs is blamed at its first differing character. Then ``\\boxed{v}``
    must hold the last z (no steps: the right answer, for a one-operation question). A response
    that boxes before its last step is wrong where the answer part starts; an extra step, at
    the step. The offset is len(response) when the text ends where more was due (no box, no
    closing brace). Text between steps, and after the box, is not judged. Never raises.
    """
    q = _QUESTION.search(question or "")
    response = response or ""
    if not q:
        return None
    numbers, ops = re.findall(r"\d+", q.group()), re.findall(r"[+-]", q.group())
    if any(len(s) > _MAX_DIGITS for s in numbers):
        return None
    tokens = list(_LEX.finditer(response))
    tail = next((t for t in tokens if t.group() == "\\boxed{" or t.group() == "The answer"), None)
    box = next((t for t in tokens if t.group() == "\\boxed{"), None)
    tail_at = tail.start() if tail else len(response)
    steps = _steps([t for t in tokens if t.start() < tail_at], response)
    if not steps and (not box or len(ops) > 1):
        return tail_at if box else None
    value = int(numbers[0])
    if not steps:  # a one-operation question answered straight in the box
        value = value + int(numbers[1]) if ops[0] == "+" else value - int(numbers[1])
    for i, ((x, xo), (op, oo), (y, yo), (z, zo)) in enumerate(steps):
        if i >= len(ops):
            return xo  # an extra step where the answer was due
        for written, at, expected in ((x, xo, str(value)), (op, oo, ops[i]), (y, yo, numbers[i + 1])):
            bad = _diff(at, written, expected)
            if bad is not None:
                return bad
        value = value + int(y) if op == "+" else value - int(y)
        bad = _diff(zo, z, str(value))
        if bad is not None:
            return bad
    if len(steps) < len(ops) and steps:
        return tail_at  # boxed (or stopped) before the last step
    if not box:
        return len(response)
    close = response.find("}", box.end())
    inside = response[box.end():close] if close >= 0 else response[box.end():]
    return _diff(box.end(), inside + ("" if close >= 0 else "\0"), str(value))


def first_error_token(tokenizer: Any, question: str, response_ids: Sequence[int]) -> int | None:
    """Index into `response_ids` of the token holding `arith_first_error`'s character (None where
    it gives None). Text is decoded without special tokens; a prefix is matched by decoding
    ``response_ids[:m]`` (bisected: prefixes only grow once their last character is complete,
    which keeps byte-level BPE characters split over tokens right). An error at the end of the
    text is the token after the last one that writes text (the stop token), else the last."""
    ids = list(response_ids)

    def decode(m: int) -> str:
        return tokenizer.decode(ids[:m], skip_special_tokens=True, clean_up_tokenization_spaces=False)

    text = decode(len(ids))
    at = arith_first_error(question, text)
    if at is None or not ids:
        return None
    want = text[:at + 1]
    lo, hi = 1, len(ids)  # smallest m whose decoded prefix starts with `want`
    while lo < hi:
        mid = (lo + hi) // 2
        if decode(mid).startswith(want):
            hi = mid
        else:
            lo = mid + 1
    return lo - 1 if at < len(text) else min(lo, len(ids) - 1)
