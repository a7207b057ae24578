"""ThinKAttention: query-driven key-channel pruning of the KV cache (Xu et al., arXiv 2407.21018).

Inference-only and training-free: the parallel forward (training, evaluation) and the prefill's
own outputs are plain causal softmax attention (SDPA). Only the decoding state changes. At the
first prefill (positions written from 0, P prompt positions, pads included) each KV head scores
its key channels from the last `obs_window` prompt queries Q_obs and the prompt keys K (post-RoPE,
real tokens only; left padding takes no part):

    score_j = ||Q_obs[:, j]||_2 * ||K[:, j]||_2 = ||Q_obs[:, j] K[:, j]^T||_F        (D channels)

and keeps the top D - floor(ratio * D) channels (indices sorted ascending; ties: the lower
index). GQA reduction (rizzrun's choice; the paper scores per query head on replicated keys):
Q_obs stacks the observation queries of all the query heads reading the KV head, so
||Q_obs[:, j]||^2 = sum_h ||Q_h,obs[:, j]||^2 -- the greedy score of the Frobenius error summed
over the group's heads (same ranking as the root-mean-square of the per-head scores).

The first n_thin = max(P - recent_size, 0) prompt keys are stored thin, k_thin (B, Hkv, n_thin,
keep): really fewer channels in memory. The last recent_size prompt keys and every later key stay
full width in k_full (B, Hkv, max_len - n_thin, D); values are not pruned. A later query q sees

    logits = [q[kept] . k_thin^T,  q . k_full^T] / sqrt(D)        (still the full head dim)

i.e. full attention with the pruned channels of the old prompt keys zeroed. ratio = 0 (or a
ratio with floor(ratio * D) = 0, or a prompt no longer than recent_size) prunes nothing and
decodes through SDPA exactly like `SDPAttention`.

Memory: key buffers are sized at the first prefill (the prompt length fixes n_thin); a fresh
state holds full-width keys for max_len positions (the unpruned size). `reset()` keeps the
buffers, reused while the next prompt has the same n_thin. Thin-cache logits are computed in
fp32 (fp64 for fp64 inputs); scores in fp32 as the spec advises.

Shapes: B batch, H heads, Hkv KV heads, T new tokens, D head_dim.
"""

import math

import torch

from rizzrun.attention.mixer import Positions
from rizzrun.attention.naive import masked_softmax
from rizzrun.attention.sdpa import sdpa_attention
from rizzrun.attention.softmax import SoftmaxAttention


def _math_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def channel_scores(q_obs, k, q_mask=None, k_mask=None):
    """Per-KV-head channel scores ||Q_obs[:, j]|| * ||K[:, j]||, the group's query heads stacked.

    q_obs (B, H, W, D) observation queries, k (B, Hkv, S, D) keys; q_mask (B, W), k_mask (B, S)
    bool (True = real) or None -> (B, Hkv, D), fp32 (fp64 for fp64 inputs).
    """
    dtype = _math_dtype(q_obs)
    B, H, W, D = q_obs.shape
    Hkv = k.shape[1]
    q2 = q_obs.to(dtype).square()
    k2 = k.to(dtype).square()
    if q_mask is not None:
        q2 = q2 * q_mask[:, None, :, None]
    if k_mask is not None:
        k2 = k2 * k_mask[:, None, :, None]
    q_sq = q2.sum(2).view(B, Hkv, H // Hkv, D).sum(2)  # query head h reads KV head h // (H / Hkv)
    return (q_sq * k2.sum(2)).sqrt()


def kept_channels(scores, keep: int):
    """The `keep` highest-scoring channels of scores (..., D), ties to the lower index, sorted
    ascending -> (..., keep) long."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[..., :keep].sort(dim=-1).values


def thin_attention(q, k_thin, kept, k_full, v, key_padding_mask=None):
    """Attention of Tq new queries over n_thin thin keys then Nf full-width keys.

    q (B, H, Tq, D), the last Tq of the n_thin + Nf positions; k_thin (B, Hkv, n_thin, keep),
    kept (B, Hkv, keep) its channels; k_full (B, Hkv, Nf, D); v (B, Hkv, n_thin + Nf, D);
    key_padding_mask (B, n_thin + Nf) bool or None -> o (B, H, Tq, D) in q's dtype.
    """
    B, H, Tq, D = q.shape
    Hkv, n_thin, keep = k_thin.shape[1], k_thin.shape[2], k_thin.shape[3]
    Nf = k_full.shape[2]
    group = H // Hkv
    dtype = _math_dtype(q)
    qm = q.to(dtype)
    idx = kept.repeat_interleave(group, dim=1)[:, :, None, :].expand(B, H, Tq, keep)
    q_kept = qm.gather(3, idx)  # q restricted to each head's kept channels
    thin = q_kept @ k_thin.to(dtype).repeat_interleave(group, dim=1).transpose(-1, -2)
    full = qm @ k_full.to(dtype).repeat_interleave(group, dim=1).transpose(-1, -2)
    scores = torch.cat([thin, full], -1) / math.sqrt(D)  # (B, H, Tq, n_thin + Nf)
    Tk = n_thin + Nf
    visible = torch.arange(Tk, device=q.device)[None, :] <= torch.arange(Tk - Tq, Tk, device=q.device)[:, None]
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, :]
    weights = masked_softmax(scores, visible)
    return (weights @ v.to(dtype).repeat_interleave(group, dim=1)).to(q.dtype)


class ThinKState:
    """Decoding state of one ThinK layer: values v (B, Hkv, max_len, D); keys k_thin (B, Hkv,
    n_thin, keep) for the pruned prompt positions [0, n_thin) with their channels kept (B, Hkv,
    keep; empty while nothing is pruned), and k_full (B, Hkv, max_len - n_thin, D) for positions [n_thin, max_len)."""

    def __init__(self, batch_size, n_kv_head, max_len, head_dim, keep, device=None, dtype=None):
        kw = dict(device=device, dtype=dtype)
        self.keep = keep
        self.v = torch.zeros(batch_size, n_kv_head, max_len, head_dim, **kw)
        self.k_full = torch.zeros(batch_size, n_kv_head, max_len, head_dim, **kw)  # no thin part yet
        self.k_thin = torch.zeros(batch_size, n_kv_head, 0, keep, **kw)
        self.kept = torch.zeros(batch_size, n_kv_head, 0, device=device, dtype=torch.long)  # none until pruned

    def reset(self) -> None:
        pass  # the next first prefill rewrites every position it reads; buffers are reused

    @property
    def n_thin(self) -> int:
        return self.k_thin.shape[2]

    def resize(self, n_thin: int) -> None:
        """Size the key buffers for n_thin thin positions (kept when already so)."""
        if n_thin == self.n_thin:
            return
        B, Hkv, max_len, D = self.v.shape
        kw = dict(device=self.v.device, dtype=self.v.dtype)
        self.k_full = None  # free before allocating: the point is the smaller footprint
        self.k_thin = torch.zeros(B, Hkv, n_thin, self.keep, **kw)
        self.kept = torch.zeros(B, Hkv, self.keep if n_thin else 0, device=self.v.device, dtype=torch.long)
        self.k_full = torch.zeros(B, Hkv, max_len - n_thin, D, **kw)

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k_thin, self.kept, self.k_full, self.v))


class ThinKAttention(SoftmaxAttention):
    """ThinK mixer; see the module docstring and `SoftmaxAttention` for the mixer API.

    ratio: fraction of key channels pruned, 0 <= ratio < 1 (paper: 0.4; 0 = no pruning).
    obs_window: observation queries (the last prompt positions) that score the channels (>= 1).
    recent_size: last prompt keys kept full width (>= 0).
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, ratio: float = 0.4, obs_window: int = 32, recent_size: int = 32):
        super().__init__(d_model, n_head, n_kv_head, head_dim, layer_idx, n_layer)
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio={ratio} must be in [0, 1) (the fraction of key channels pruned)")
        if obs_window < 1:
            raise ValueError(f"obs_window={obs_window} must be >= 1")
        if recent_size < 0:
            raise ValueError(f"recent_size={recent_size} must be >= 0")
        self.ratio, self.obs_window, self.recent_size = ratio, obs_window, recent_size
        self.keep = head_dim - math.floor(ratio * head_dim)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> ThinKState:
        return ThinKState(batch_size, self.n_kv_head, max_len, self.head_dim, self.keep, device, dtype)

    def attend(self, q, k, v, key_padding_mask=None):
        return sdpa_attention(q, k, v, key_padding_mask, check=False)

    def forward(self, x, positions: Positions, state: ThinKState | None = None):
        if state is None:  # training / parallel forward: plain causal attention
            return super().forward(x, positions)
        B, T, _ = x.shape
        q, k, v = self.project(x, positions)
        start, mask = positions.start, positions.key_padding_mask
        if start == 0:
            o = self.attend(q, k, v, mask)  # the prompt itself attends to full keys
            self._prune(state, q, k, mask)
            state.v[:, :, :T] = v
            return self.out(o.transpose(1, 2).reshape(B, T, -1))
        n = state.n_thin
        state.k_full[:, :, start - n:start - n + T] = k
        state.v[:, :, start:start + T] = v
        k_full, v_all = state.k_full[:, :, :start + T - n].to(q.dtype), state.v[:, :, :start + T].to(q.dtype)
        if n == 0:
            o = self.attend(q, k_full, v_all, mask)
        else:
            o = thin_attention(q, state.k_thin, state.kept, k_full, v_all, mask)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))

    def _prune(self, state: ThinKState, q, k, mask) -> None:
        """Choose each KV head's channels from the prompt and store its keys, old ones thin."""
        P = k.shape[2]
        n_thin = max(P - self.recent_size, 0) if self.keep < self.head_dim else 0
        state.resize(n_thin)
        if n_thin:
            W = min(self.obs_window, P)
            scores = channel_scores(q[:, :, P - W:], k, None if mask is None else mask[:, P - W:], mask)
            kept = kept_channels(scores, self.keep)  # (B, Hkv, keep)
            state.kept.copy_(kept)
            idx = kept[:, :, None, :].expand(-1, -1, n_thin, -1)
            state.k_thin.copy_(k[:, :, :n_thin].gather(3, idx))
        state.k_full[:, :, :P - n_thin] = k[:, :, n_thin:]

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, ratio={self.ratio}, obs_window={self.obs_window}, "
                f"recent_size={self.recent_size}")
