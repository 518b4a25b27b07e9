"""Chunked log-probs and entropy (learner.loss.token_logprobs): equal to the plain
log_softmax / entropy in value and gradient, and never a float32 [tokens x vocab] tensor for
more than one chunk of positions, in forward or backward."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import learner.loss
from learner.loss import gather_logprobs, token_logprobs

S, L, V = 3, 9, 50  # 27 positions: chunk 4 and 5 do not divide them, 27 and 1024 take all


def plain(logits, input_ids):
    """The reference: whole-tensor float32 log_softmax, entropy -sum p log p, same layout."""
    lp = torch.log_softmax(logits.float(), -1)[:, :-1]
    return lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1), -(lp.exp() * lp).sum(-1)


def random_case(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(S, L, V, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    ids = torch.randint(0, V, (S, L), generator=g)
    a, b = torch.randn(S, L - 1, generator=g), torch.randn(S, L - 1, generator=g)
    return logits, ids, a, b


def grads(logp, H, logits, a, b):
    """d/dlogits of three objectives: log-probs only, entropy only, both."""
    out = []
    for loss in ((logp * a).sum(), (H * b).sum(), (logp * a).sum() + (H * b).sum()):
        out.append(torch.autograd.grad(loss, logits, retain_graph=True)[0])
    return out


@pytest.mark.parametrize("chunk", [1, 4, 5, 27, 1024])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_equal_the_plain_computation(chunk, dtype):
    logits, ids, a, b = random_case(dtype)
    logp, H = token_logprobs(logits, ids, chunk, with_entropy=True)
    assert logp.shape == H.shape == (S, L - 1) and logp.dtype == H.dtype == torch.float32
    # the reference in float64 (float32 inside ours: 1e-6 is a few float32 ulps here)
    want_logp, want_H = plain(logits.double() if dtype == torch.float64 else logits, ids)
    torch.testing.assert_close(logp, want_logp.float(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(H, want_H.float(), atol=1e-6, rtol=1e-6)
    for got, want in zip(grads(logp, H, logits, a, b), grads(want_logp, want_H, logits, a, b)):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gather_logprobs(logits, ids, chunk), logp)


@pytest.mark.parametrize("chunk", [4, 1024])
def test_bf16_logits_values_exact_gradients_to_bf16_rounding(chunk):
    logits, ids, a, b = random_case(torch.bfloat16, seed=1)
    logp, H = token_logprobs(logits, ids, chunk, with_entropy=True)
    want_logp, want_H = plain(logits, ids)  # same float32 upcast of the same bf16 values
    torch.testing.assert_close(logp, want_logp, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(H, want_H, atol=1e-6, rtol=1e-6)
    for got, want in zip(grads(logp, H, logits, a, b), grads(want_logp, want_H, logits, a, b)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)


def test_alignment_and_no_entropy_by_default():
    logits, ids, _, _ = random_case(torch.float32, seed=2)
    with torch.no_grad():
        logp, H = token_logprobs(logits, ids, 4)
    assert H is None
    s, j = 1, 2  # column j: log pi(ids[s, j+1]) from the logits at position j of row s
    torch.testing.assert_close(logp[s, j], torch.log_softmax(logits[s, j], -1)[ids[s, j + 1]])


def test_gradcheck_of_both_outputs():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 5, (2, 4), generator=g)
    # float32 inside, so finite differences at float32 precision
    assert torch.autograd.gradcheck(
        lambda x: tuple(t.double() for t in token_logprobs(x, ids, 3, with_entropy=True)),
        (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)


class Float32Shapes(TorchDispatchMode):
    """Records the row count of every float32 [rows, V] (or [..., V]) tensor any op makes."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() >= 2 and t.shape[-1] == V:
                self.rows.append(t.numel() // V)
        return out


@pytest.mark.parametrize("chunk", [4, 5])
def test_float32_copies_never_exceed_one_chunk_forward_and_backward(chunk, monkeypatch):
    logits, ids, a, b = random_case(torch.bfloat16, seed=4)
    calls = []
    real = learner.loss._log_softmax_chunk
    monkeypatch.setattr(learner.loss, "_log_softmax_chunk", lambda x: calls.append(x.shape[0]) or real(x))
    with Float32Shapes() as seen:
        logp, H = token_logprobs(logits, ids, chunk, with_entropy=True)
        ((logp * a).sum() + (H * b).sum()).backward()
    assert seen.rows and max(seen.rows) <= chunk
    # vectorised over rows: the S*L flattened positions in ceil(S*L / chunk) chunks, each
    # once in forward and once in backward
    n = math.ceil(S * L / chunk)
    assert calls == ([chunk] * (n - 1) + [S * L - chunk * (n - 1)]) * 2
    # the instrument does see a whole micro-batch when there is one
    with Float32Shapes() as plain_seen:
        plain(logits, ids)
    assert max(plain_seen.rows) == S * L
