"""vLLM worker extension: load new policy weights into the running engine, in place.

vLLM does not rebuild raw tensors passed through `collective_rpc`, so weights travel as
safetensors bytes and are decoded inside the worker, then handed to vLLM's own in-place
`reload_weights` (which runs each model's `load_weights`: fused qkv / gate_up packing and
tied embeddings are handled by vLLM, not by us).
"""
from __future__ import annotations


class WeightReceiver:
    """Mixed into vLLM's worker class through `LLM(worker_extension_cls=...)`."""

    def load_weights_from_bytes(self, blob: bytes) -> int:
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
