"""NaiveAttention: causal softmax attention written out, the readable reference.

    o = softmax(q k^T / sqrt(D) + mask) v        (Vaswani et al., arXiv 1706.03762)

Grouped-query attention (arXiv 2305.13245): query head h reads key/value head h // (H / Hkv).
Math runs in fp32 whatever the input dtype, so it can judge the fast kernels.
"""

import math

import torch

from rizzrun.attention import check_qkv
from rizzrun.attention.softmax import SoftmaxAttention


def causal_visibility(Tq: int, Tk: int, key_padding_mask=None, device=None):
    """(Tq, Tk) or (B, 1, Tq, Tk) bool: query i (absolute position Tk - Tq + i) sees key j."""
    q_pos = torch.arange(Tk - Tq, Tk, device=device)[:, None]
    visible = torch.arange(Tk, device=device)[None, :] <= q_pos
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, :]
    return visible


def masked_softmax(scores, visible):
    """softmax over the visible keys; a query that sees no key at all (left padding) gets zeros.
    The most negative finite float instead of -inf keeps that row finite, so no NaN reaches the
    gradients of the other positions."""
    scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) * visible.any(dim=-1, keepdim=True)


def naive_attention(q, k, v, key_padding_mask=None, check: bool = True):
    """Explicit causal attention; same shapes as `rizzrun.attention.sdpa.sdpa_attention`, in q's dtype."""
    if check:
        check_qkv(q, k, v, key_padding_mask)
    Tq, Tk, D = q.shape[2], k.shape[2], q.shape[3]
    group = q.shape[1] // k.shape[1]
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k.to(dtype).repeat_interleave(group, dim=1)
    v = v.to(dtype).repeat_interleave(group, dim=1)
    scores = q.to(dtype) @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, Tq, Tk)
    weights = masked_softmax(scores, causal_visibility(Tq, Tk, key_padding_mask, q.device))
    return (weights @ v).to(q.dtype)


class NaiveAttention(SoftmaxAttention):
    """Softmax attention mixer with the written-out kernel; see `SoftmaxAttention`."""

    trains_through_state = True  # its KV buffer is written with autograd (tests/test_shared_prompt.py)

    def attend(self, q, k, v, key_padding_mask=None):
        return naive_attention(q, k, v, key_padding_mask, check=False)
