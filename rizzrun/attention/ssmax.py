"""SSMaxAttention: Scalable-Softmax attention (Nakanishi, arXiv 2501.19399).

    SSMax(z)_i = n^{s z_i} / sum_j n^{s z_j} = softmax((s log n) z)_i
    o_i = softmax((s_h log n_i + b_h) q_i K^T / sqrt(D) + causal mask) V

n_i is the number of keys query i sees: its position + 1, the number of *real* keys with left
padding, the cache length in decoding. s (and the optional bias b of the paper's "s log n + b"
ablation) is one scalar per layer and head. The factor is folded into q (fp32, then cast), so
the fused SDPA kernel runs unchanged. A padding query (n = 0) gets n = 1: its output is zero
anyway, and log 0 would put -inf into q.

Initialisation (unconfirmed in the paper): s_init, or, when None, 1 / log(train_len) so that
SSMax equals the plain softmax at the training length (factor 1 at n = train_len).

Shapes: B batch, H heads, Tq queries, Tk keys, D head_dim.
"""

import math

import torch
from torch import nn

from rizzrun.attention.sdpa import sdpa_attention
from rizzrun.attention.softmax import SoftmaxAttention


def visible_keys(Tq: int, Tk: int, key_padding_mask=None, device=None):
    """(1 or B, Tq) float32: keys seen by each of the last Tq queries of Tk (real keys only)."""
    if key_padding_mask is None:
        return torch.arange(Tk - Tq + 1, Tk + 1, device=device, dtype=torch.float32)[None]
    return key_padding_mask.cumsum(dim=-1)[:, Tk - Tq:].to(torch.float32)


def ssmax_factor(s, n, bias=None):
    """(s log n + b) per row: s, bias (H,) or broadcastable to (B, H, Tq); n (B, Tq) -> (B, H, Tq),
    fp32 (fp64 when s is)."""
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    s = s.to(dtype)
    if s.dim() == 1:
        s = s[:, None]
    factor = s * n.to(dtype).clamp(min=1).log()[:, None, :]
    if bias is not None:
        bias = bias.to(dtype)
        factor = factor + (bias[:, None] if bias.dim() == 1 else bias)
    return factor


def ssmax_attention(q, k, v, s, bias=None, key_padding_mask=None):
    """Causal SSMax attention, the factor folded into q: q (B, H, Tq, D), k/v (B, Hkv, Tk, D),
    s/bias (H,) or (B, H, Tq), key_padding_mask (B, Tk) bool or None -> o (B, H, Tq, D)."""
    Tq, Tk = q.shape[2], k.shape[2]
    factor = ssmax_factor(s, visible_keys(Tq, Tk, key_padding_mask, q.device), bias)
    return sdpa_attention(q * factor[..., None].to(q.dtype), k, v, key_padding_mask)


def ssmax(z, s, dim: int = -1):
    """SSMax of logits z over `dim` (n = z.shape[dim]): softmax((s log n) z)."""
    return torch.softmax(s * math.log(z.shape[dim]) * z, dim=dim)


class SSMaxAttention(SoftmaxAttention):
    """Softmax attention with the SSMax query factor; see `SoftmaxAttention` for the mixer API.

    s_init: initial s (> 0); None: 1 / log(train_len). learnable: s (and b) are parameters,
    else a fixed buffer. bias: add a learnable per-head b (init 0) to the factor.
    """

    trains_through_state = True  # its KV buffer is written with autograd (tests/test_shared_prompt.py)

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, s_init: float | None = None, train_len: int = 256, learnable: bool = True,
                 bias: bool = False):
        super().__init__(d_model, n_head, n_kv_head, head_dim, layer_idx, n_layer)
        if s_init is None:
            if not (isinstance(train_len, int) and train_len >= 2):
                raise ValueError(f"train_len={train_len!r} must be an integer >= 2 (s_init = 1 / log(train_len))")
            s_init = 1.0 / math.log(train_len)
        if not s_init > 0:
            raise ValueError(f"s_init={s_init!r} must be > 0 (or None: 1 / log(train_len))")
        self.s_init, self.train_len, self.learnable = float(s_init), train_len, learnable
        s = torch.full((n_head,), self.s_init)
        b = torch.zeros(n_head) if bias else None
        if learnable:
            self.s = nn.Parameter(s)
            self.b = nn.Parameter(b) if bias else None
        else:
            self.register_buffer("s", s)
            self.register_buffer("b", b)

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        super().reset_parameters(std, out_std)
        self.s.fill_(self.s_init)
        if self.b is not None:
            self.b.zero_()

    def attend(self, q, k, v, key_padding_mask=None):
        return ssmax_attention(q, k, v, self.s, self.b, key_padding_mask)

    def scales(self) -> dict[str, list[float]]:
        """The learned per-head values, for logging: {"s": [H floats], "b": [H floats] (bias only)}."""
        out = {"s": self.s.detach().float().cpu().tolist()}
        if self.b is not None:
            out["b"] = self.b.detach().float().cpu().tolist()
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s_init={self.s_init:.4g}, learnable={self.learnable}, bias={self.b is not None}"
