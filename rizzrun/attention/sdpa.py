"""SDPAttention: causal attention through torch's fused `scaled_dot_product_attention`.

    o = softmax(q k^T / sqrt(D) + mask) v        (Vaswani et al., arXiv 1706.03762)

Torch picks the fastest backend (FlashAttention, memory-efficient, or math) for the inputs.
Grouped-query attention (arXiv 2305.13245) uses `enable_gqa` where torch has it (>= 2.5), else
keys and values are expanded to every query head.
"""

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.attention import check_heads, check_qkv

_HAS_ENABLE_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


class SDPAttention(nn.Module):
    """Fused causal attention with optional key padding; see `rizzrun.attention` for the contract.

    q (B, H, Tq, D), k/v (B, Hkv, Tk, D) -> o (B, H, Tq, D). Queries that see no real key (left
    padding) return zeros.
    """

    def __init__(self, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0):
        super().__init__()
        check_heads(n_head, n_kv_head, head_dim)
        self.n_head, self.n_kv_head, self.head_dim, self.layer_idx = n_head, n_kv_head, head_dim, layer_idx

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(self, q, k, v, key_padding_mask)
        Tq, Tk = q.shape[2], k.shape[2]
        kwargs = {}
        if self.n_kv_head != self.n_head:
            if _HAS_ENABLE_GQA:
                kwargs["enable_gqa"] = True
            else:
                group = self.n_head // self.n_kv_head
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

        if key_padding_mask is None:
            if Tq == Tk:  # training: the fused kernels' own causal mask, nothing materialised
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kwargs)
            if Tq == 1:  # decoding: the newest query sees every cached key
                return F.scaled_dot_product_attention(q, k, v, **kwargs)

        # is_causal aligns the mask top-left; queries here are the *last* Tq positions.
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
        mask = mask & key_padding_mask[:, None, None, :]  # (B, 1, Tq, Tk)
        # A query with no visible key (left padding) softmaxes over only -inf, which some torch
        # versions and backends turn into NaN, forward and backward. Let it see every key, then
        # zero its output so it carries neither value nor gradient on any backend.
        sees_a_key = mask.any(dim=-1, keepdim=True)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~sees_a_key, **kwargs)
        return o.masked_fill(~sees_a_key, 0.0)
