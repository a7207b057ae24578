"""Softmax attention as a token mixer: projections, RoPE, a static key/value cache, a kernel.

    o = softmax(q k^T / sqrt(D) + causal mask) v        (Vaswani et al., arXiv 1706.03762)

q, k, v and out are bias-free linear maps; RoPE (Su et al., arXiv 2104.09864) rotates q and k;
grouped-query attention (GQA, arXiv 2305.13245) keeps n_kv_head <= n_head key/value heads. The
subclasses differ only in `attend`, the kernel: `SDPAttention` (torch's fused SDPA) and
`NaiveAttention` (the softmax written out). The softmax-based methods (SSMax, selective
attention, FAM) subclass this too. Parameter names (q, k, v, out) are the Hugging Face Llama
layout's (`rizzrun.models.hf_llama`).

Shapes: B batch, T new tokens, C = d_model, H = n_head, Hkv = n_kv_head, D = head_dim.
"""

import torch
from torch import nn

from rizzrun.attention import check_heads
from rizzrun.attention.mixer import Positions, repeat_rows


def apply_rope(x, cos, sin):
    """Rotate each channel pair (j, j + D/2) of x (B, H, T, D) by its angle; cos, sin (T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)


class KVState:
    """Static key/value buffers of one softmax layer: k, v (B, Hkv, max_len, D), written in place.
    How many positions are filled is the cache's `pos` (shared by the layers)."""

    def __init__(self, batch_size, n_kv_head, max_len, head_dim, device=None, dtype=None):
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def reset(self) -> None:
        pass  # positions past the cache's `pos` are never read

    def keys_values(self, length: int):
        """(k, v), each (B, Hkv, length, D): the cached keys (RoPE applied) and values of the first
        `length` positions (the cache's `pos`), views, not copies (what a decoder may read)."""
        return self.k[:, :, :length], self.v[:, :, :length]

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def repeat_interleave(self, repeats: int) -> "KVState":
        """A copy with each row repeated `repeats` times (row b -> rows b * repeats + g)."""
        return repeat_rows(self, repeats)


class SoftmaxAttention(nn.Module):
    """Causal softmax attention over the keys so far; x (B, T, C) -> (B, T, C).

    `attend(q, k, v, key_padding_mask)` is the kernel: q (B, H, Tq, D), k/v (B, Hkv, Tk, D), the
    queries being the last Tq of the Tk positions; mask (B, Tk) bool or None -> o (B, H, Tq, D).

    `trains_through_state`: whether `forward` over a decoding state (`init_state`) gives the parallel
    forward's gradients as well as its outputs, so a group's shared prompt can run once in training
    (`rizzrun.rollouts.logps`). False unless a subclass is tested to (tests/test_shared_prompt.py).
    """

    trains_through_state = False

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1):
        super().__init__()
        check_heads(n_head, n_kv_head, head_dim)
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.layer_idx, self.n_layer = layer_idx, n_layer
        self.q = nn.Linear(d_model, n_head * head_dim, bias=False)
        self.k = nn.Linear(d_model, n_kv_head * head_dim, bias=False)
        self.v = nn.Linear(d_model, n_kv_head * head_dim, bias=False)
        self.out = nn.Linear(n_head * head_dim, d_model, bias=False)

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        for linear in (self.q, self.k, self.v):
            nn.init.normal_(linear.weight, std=std)
        nn.init.normal_(self.out.weight, std=out_std)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None, key_pruning=None):
        """The layer's decoding state: a `KVState`; with key_pruning (a
        `rizzrun.attention.think.KeyPruning` that prunes at least one channel) ThinK's thin key
        cache, `ThinKState` (arXiv 2407.21018), which `forward` then decodes through. Only the
        plain softmax kernels (`SDPAttention`, `NaiveAttention`) take key_pruning: ThinK's thin
        attention reproduces them, not another kernel (SSMax's, a subclass's own `attend`)."""
        if key_pruning is not None:
            from rizzrun.attention.think import KeyPruning, ThinKState, plain_softmax_kernel

            if not isinstance(key_pruning, KeyPruning):
                raise ValueError(f"key_pruning={key_pruning!r} must be None or a "
                                 "rizzrun.attention.think.KeyPruning(ratio, obs_window, recent_size)")
            if not plain_softmax_kernel(self):
                raise ValueError(f"layer {self.layer_idx}'s token mixer {type(self).__name__} cannot prune its key "
                                 "cache (key_pruning): ThinK's thin-key attention is plain softmax attention, so it "
                                 "needs SDPAttention, NaiveAttention or ThinKAttention")
            if key_pruning.keep(self.head_dim) < self.head_dim:
                return ThinKState(batch_size, self.n_kv_head, max_len, self.head_dim, key_pruning, device, dtype)
        return KVState(batch_size, self.n_kv_head, max_len, self.head_dim, device=device, dtype=dtype)

    def project(self, x, positions: Positions):
        """q (B, H, T, D), k, v (B, Hkv, T, D) of the new tokens, RoPE applied."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        return apply_rope(q, positions.cos, positions.sin), apply_rope(k, positions.cos, positions.sin), v

    def forward(self, x, positions: Positions, state: KVState | None = None):
        B, T, _ = x.shape
        q, k, v = self.project(x, positions)
        if state is not None and not isinstance(state, KVState):  # a thin key cache (ThinKState) attends itself
            o = state.attend(q, k, v, positions, self.attend)
            return self.out(o.transpose(1, 2).reshape(B, T, -1))
        if state is not None:
            start = positions.start
            state.k[:, :, start:start + T] = k
            state.v[:, :, start:start + T] = v
            # A no-op unless the cache was made in another dtype than the activations.
            k, v = state.k[:, :, :start + T].to(q.dtype), state.v[:, :, :start + T].to(q.dtype)
        o = self.attend(q, k, v, positions.key_padding_mask)  # (B, H, T, D)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))

    def attend(self, q, k, v, key_padding_mask=None):
        raise NotImplementedError(f"{type(self).__name__} must define attend(q, k, v, key_padding_mask)")

    def extra_repr(self) -> str:
        return (f"n_head={self.n_head}, n_kv_head={self.n_kv_head}, head_dim={self.head_dim}, "
                f"layer_idx={self.layer_idx}")
