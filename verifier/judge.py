"""Optional LLM judge (docs/algorithm.md, "Verifier in the paper").

Asked only about answers the rules graded `incorrect`; it can turn them `correct` (a
rescue) but never overturns a rule-`correct` verdict. Anything but a clear YES (a NO, an
unclear reply, an HTTP error, no reply within `timeout_s`) leaves the verdict incorrect.
The endpoint is any OpenAI-compatible server (`POST {url}/chat/completions`, temperature 0).
"""
from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

from verifier.verdict import Verdict

SYSTEM_PROMPT = ("You compare a student's final answer with the reference answer of a math "
                 "problem. Reply with exactly one word: YES if they are mathematically "
                 "equivalent, NO otherwise.")


def parse_reply(text: str) -> bool | None:
    """True for a clear YES, False for a clear NO, None when unclear.

    >>> parse_reply(" Yes."), parse_reply("NO"), parse_reply("It depends")
    (True, False, None)
    """
    words = text.strip().strip("*").split()
    first = words[0].strip(".,!:*").upper() if words else ""
    return {"YES": True, "NO": False}.get(first)


class LLMJudge:
    """Client of an OpenAI-compatible chat endpoint; `rescue` is the only entry point."""

    def __init__(self, url: str, model: str | None, timeout_s: float = 10.0,
                 max_concurrency: int = 8, max_answer_chars: int = 1_000) -> None:
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_answer_chars = max_answer_chars
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="judge")

    def ask(self, gold: str, answer: str) -> bool | None:
        """One request: does `answer` match `gold`? (None: no clear reply.)"""
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Reference answer: {gold}\nStudent answer: {answer}"},
            ],
        }
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            reply = json.loads(resp.read(1_000_000))
        return parse_reply(reply["choices"][0]["message"]["content"] or "")

    def rescue(self, verdicts: list[Verdict], golds: list[str]) -> list[Verdict]:
        """Ask about each rule-`incorrect` verdict (concurrently); a YES makes it correct."""
        asks = {i: self._pool.submit(self.ask, g, v.answer)
                for i, (v, g) in enumerate(zip(verdicts, golds))
                if v.outcome == "incorrect" and v.answer
                and len(v.answer) <= self.max_answer_chars}
        out = list(verdicts)
        for i, fut in asks.items():
            try:
                yes = fut.result(timeout=self.timeout_s)  # total bound, even on a slow drip
            except (FutureTimeout, Exception):
                yes = None
            if yes is True:
                out[i] = replace(out[i], correct=True, outcome="correct",
                                 detail="rescued by LLM judge")
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
