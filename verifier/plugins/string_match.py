"""An example `verifier.reward_fn`: exact string match, for a task whose answers are words or
labels rather than math (a city, a class name, yes / no).

    python -m launch.train verifier.reward_fn=verifier.plugins.string_match:reward ...

The response's answer is the content of its last `\\boxed{...}` (the prompt asks for one),
else its last non-empty line; it is correct when it equals the gold once both are case-folded,
their whitespace collapsed and surrounding `$`, `.` and quotes stripped.

>>> reward("So the capital is \\\\boxed{Paris}.", "paris", "What is the capital of France?")
True
>>> reward("I think\\nLyon", "Paris", None)
False
"""
from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def final_answer(completion: str) -> str:
    """The last `\\boxed{}`'s content (not nested), else the last non-empty line."""
    boxed = _BOXED.findall(completion)
    if boxed:
        return boxed[-1]
    lines = [line for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalize(text: str) -> str:
    return " ".join(text.strip().strip("$.'\"` ").casefold().split())


def reward(completion: str, gold: str, question: str | None) -> bool:
    """True when the response's final answer is the gold (see the module docstring)."""
    return normalize(final_answer(completion)) == normalize(gold)
