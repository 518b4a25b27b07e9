"""vLLM worker extension: load new policy weights into the running engine, in place.

Each vLLM worker (every tensor-parallel rank of every engine) joins the weight-sync groups
(`learner.weight_sync.group`) once, then for every sync receives the buckets (sync_mode
shards: each learner rank's partitions of each bucket on that rank's group, reassembled here,
`learner.weight_sync.shards`; gather: learner rank 0's whole buckets on the one group),
straight into vLLM's own in-place `reload_weights` (which runs each
model's `load_weights`: fused qkv / gate_up packing, tensor-parallel sharding and tied
embeddings are handled by vLLM, not by us). Only the bucket plan, pickled metadata of a few
hundred KB at most, passes through `collective_rpc`; msgpack there refuses bytes over 4 GiB.
"""
from __future__ import annotations

import pickle


class WeightReceiver:
    """Mixed into vLLM's worker class through `LLM(worker_extension_cls=...)`."""

    def join_weight_sync(self, endpoints: list[tuple[str, int]], rank_offset: int, world_size: int, backend: str,
                         source_rank: int | None = None) -> int:
        """Join every weight-sync group, in order (one (host, port) each: group r carries
        learner rank r's partitions in sync_mode shards), as rank `rank_offset + this worker's
        rank in its engine`; `source_rank` set: colocated, buckets come by CUDA IPC from that
        learner rank."""
        from learner.weight_sync.group import init_group

        rank = rank_offset + self.rank
        self._weight_sync_groups = [init_group(host, int(port), rank, world_size, backend) for host, port in endpoints]
        self._weight_sync_group = self._weight_sync_groups[0]  # colocated, diagnostics
        self._weight_source = source_rank
        return rank

    def receive_weights(self, plan_bytes: bytes, skip_buckets: tuple[int, ...] = ()) -> dict[str, int]:
        """Receive every bucket of the plan and load it in place as it arrives. `skip_buckets`
        (a test hook) receives those buckets without loading them. Returns what arrived."""
        from learner.weight_sync.cuda_ipc import receive_colocated
        from learner.weight_sync.group import SyncStats
        from learner.weight_sync.shards import receive_shards

        plan = pickle.loads(plan_bytes)
        stats, device, skip = SyncStats(), self.model_runner.device, set(skip_buckets)
        if self._weight_source is None:  # W groups: W partitions per bucket (one group: whole buckets)
            weights = receive_shards(self._weight_sync_groups, plan, device, skip=skip, stats=stats)
        else:
            weights = receive_colocated(self._weight_sync_group, plan, source_rank=self._weight_source,
                                        device=device, skip=skip, stats=stats)
        try:
            self.reload_weights(weights_iterator=weights)  # one call per sync (layerwise reload)
        finally:
            for _ in weights:  # a loader that stopped early must not leave the senders waiting
                pass
        self._reprocess_tied_lm_head()
        return {"rank": self.rank, "buckets": stats.broadcasts, "bytes": stats.bytes,
                "skipped": stats.skipped, "version": plan.version}

    # ---- diagnostics for bench.bench_sync (the transport's own limit, memory) ----------
    def time_raw_broadcast(self, nbytes: int) -> float:
        """One broadcast of a flat `nbytes` buffer on the sync group (every member calls it)."""
        from learner.weight_sync.group import raw_broadcast

        return raw_broadcast(self._weight_sync_group, nbytes, self.model_runner.device)

    def reset_peak_memory(self) -> int:
        from learner.weight_sync.memory import reset_peak

        return reset_peak()

    def peak_memory(self) -> int:
        from learner.weight_sync.memory import peak

        return peak()

    def load_weights_from_bytes(self, blob: bytes) -> int:
        """The object-store path (one safetensors blob as an RPC argument, under 4 GiB): kept
        only as the benchmark's baseline (`bench.bench_sync`)."""
        from safetensors.torch import load

        tensors = load(blob)
        device = self.model_runner.device
        self.reload_weights(weights_iterator=((k, v.to(device)) for k, v in tensors.items()))
        self._reprocess_tied_lm_head()
        return len(tensors)

    def _reprocess_tied_lm_head(self) -> None:
        """A tied LM head loads no weight of its own, so vLLM's reload never re-runs its
        post-load processing. On CPU that processing packs a private copy of the weight
        for the GEMM kernel: without this the head keeps the OLD embedding (log-probs off
        by ~0.9 nats after one sync on a tied tiny model). A no-op cost on GPU."""
        model = self.model_runner.model
        lm_head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if lm_head is None or embed is None or getattr(lm_head, "quant_method", None) is None:
            return
        if lm_head is embed or lm_head.weight.data_ptr() == embed.weight.data_ptr():
            lm_head.quant_method.process_weights_after_loading(lm_head)
