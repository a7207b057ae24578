"""SDPAttention: softmax attention through torch's fused `scaled_dot_product_attention`.

    o = softmax(q k^T / sqrt(D) + mask) v        (Vaswani et al., arXiv 1706.03762)

Torch picks the fastest backend (FlashAttention, memory-efficient, or math) for the inputs.
Grouped-query attention (arXiv 2305.13245) uses `enable_gqa` where torch has it (>= 2.5), else
keys and values are expanded to every query head.
"""

import torch
import torch.nn.functional as F

from rizzrun.attention import check_qkv
from rizzrun.attention.softmax import SoftmaxAttention

_HAS_ENABLE_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


def sdpa_attention(q, k, v, key_padding_mask=None, check: bool = True):
    """Causal attention of the last Tq of Tk positions; q (B, H, Tq, D), k/v (B, Hkv, Tk, D),
    key_padding_mask (B, Tk) bool (True = real) or None -> o (B, H, Tq, D). Queries that see no
    real key (left padding) return zeros."""
    if check:
        check_qkv(q, k, v, key_padding_mask)
    Tq, Tk = q.shape[2], k.shape[2]
    kwargs = {}
    if k.shape[1] != q.shape[1]:
        if _HAS_ENABLE_GQA:
            kwargs["enable_gqa"] = True
        else:
            group = q.shape[1] // k.shape[1]
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


class SDPAttention(SoftmaxAttention):
    """Softmax attention mixer with the fused SDPA kernel; see `SoftmaxAttention`."""

    trains_through_state = True  # its KV buffer is written with autograd (tests/test_shared_prompt.py)

    def attend(self, q, k, v, key_padding_mask=None):
        return sdpa_attention(q, k, v, key_padding_mask, check=False)
