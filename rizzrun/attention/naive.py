"""NaiveAttention: causal softmax attention written out, the readable reference.

    o = softmax(q k^T / sqrt(D) + mask) v        (Vaswani et al., arXiv 1706.03762)

Grouped-query attention (arXiv 2305.13245): query head h reads key/value head h // (H / Hkv).
Math runs in fp32 whatever the input dtype, so it can judge the fast kernels.
"""

import math

import torch
from torch import nn

from rizzrun.attention import check_heads, check_qkv


class NaiveAttention(nn.Module):
    """Explicit causal attention with optional key padding; see `rizzrun.attention` for the contract.

    q (B, H, Tq, D), k/v (B, Hkv, Tk, D) -> o (B, H, Tq, D), in q's dtype.
    """

    def __init__(self, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0):
        super().__init__()
        check_heads(n_head, n_kv_head, head_dim)
        self.n_head, self.n_kv_head, self.head_dim, self.layer_idx = n_head, n_kv_head, head_dim, layer_idx

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(self, q, k, v, key_padding_mask)
        Tq, Tk = q.shape[2], k.shape[2]
        group = self.n_head // self.n_kv_head
        k = k.float().repeat_interleave(group, dim=1)
        v = v.float().repeat_interleave(group, dim=1)

        scores = q.float() @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, Tq, Tk)
        q_pos = torch.arange(Tk - Tq, Tk, device=q.device)[:, None]
        k_pos = torch.arange(Tk, device=q.device)[None, :]
        visible = k_pos <= q_pos  # (Tq, Tk)
        if key_padding_mask is not None:
            visible = visible & key_padding_mask[:, None, None, :]  # (B, 1, Tq, Tk)
        # The most negative finite float instead of -inf: a query that sees no key at all (a
        # left-padding position) then gets finite uniform weights, zeroed just below, instead of
        # a NaN that would leak into the gradients of every other position.
        scores = scores.masked_fill(~visible, torch.finfo(torch.float32).min)
        weights = scores.softmax(dim=-1) * visible.any(dim=-1, keepdim=True)
        return (weights @ v).to(q.dtype)
