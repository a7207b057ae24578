"""ThinK: query-driven key-channel pruning of the KV cache (Xu et al., arXiv 2407.21018).

Inference-only and training-free: the parallel forward (training, evaluation) and the prefill's
own outputs are plain causal softmax attention. Only the decoding state changes, and any softmax
mixer with the plain kernel (`SDPAttention`, `NaiveAttention`) keeps it when asked:
`mixer.init_state(B, max_len, key_pruning=KeyPruning(ratio, obs_window, recent_size))` returns a
`ThinKState`, which `SoftmaxAttention.forward` decodes through (a decoder asks for it through
`model.init_cache(..., key_pruning=...)`: `rizzrun.decoders.think.ThinK`). `ThinKAttention` is
`SDPAttention` whose states prune by default (the `attention=think` mixer).

At the first prefill (positions written from 0, P prompt positions, pads included) each KV head
scores its key channels from the last `obs_window` prompt queries Q_obs and the prompt keys K
(post-RoPE, real tokens only; left padding takes no part):

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
ratio with floor(ratio * D) = 0) prunes nothing: `init_state` then returns the plain key/value
cache (`KVState`), bit for bit the unpruned decoding. A prompt no longer than recent_size prunes
nothing either and decodes through the mixer's own kernel exactly as the plain cache does.

Decision (the paper scores post-RoPE keys): the kept channels depend on absolute positions, so a
left-padded row decodes as that row alone with the same padding, not as the unpadded row alone.

Memory: key buffers are sized at the first prefill (the prompt length fixes n_thin); a fresh
state holds full-width keys for max_len positions (the unpruned size). `reset()` keeps the
buffers, reused while the next prompt has the same n_thin. Thin-cache logits are computed in
fp32 (fp64 for fp64 inputs); scores in fp32 as the spec advises.

Shapes: B batch, H heads, Hkv KV heads, T new tokens, D head_dim.
"""

import math
import numbers
from dataclasses import dataclass

import torch

from rizzrun.attention.mixer import Positions, repeat_rows
from rizzrun.attention.naive import NaiveAttention, masked_softmax
from rizzrun.attention.sdpa import SDPAttention


def _math_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class KeyPruning:
    """ThinK's settings, the decoding-state option `key_pruning` of softmax mixers.

    ratio: fraction of key channels pruned per head, 0 <= ratio < 1 (paper: 0.4; 0 = none).
    obs_window: observation queries (the last prompt positions) that score the channels (>= 1).
    recent_size: last prompt keys kept full width (>= 0).
    """

    ratio: float = 0.4
    obs_window: int = 32
    recent_size: int = 32

    def __post_init__(self):
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 <= r < 1:
            raise ValueError(f"ratio={r!r} must be in [0, 1) (the fraction of key channels pruned)")
        for name, low in (("obs_window", 1), ("recent_size", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name}={v!r} must be >= {low}" + ("" if isinstance(v, numbers.Integral)
                                                                     else " (an integer)"))

    def keep(self, head_dim: int) -> int:
        """Channels kept per head: head_dim - floor(ratio * head_dim)."""
        return head_dim - math.floor(self.ratio * head_dim)


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
    """Decoding state of one softmax layer with a thin key cache (`KeyPruning`): values v (B, Hkv,
    max_len, D); keys k_thin (B, Hkv, n_thin, keep) for the pruned prompt positions [0, n_thin)
    with their channels kept (B, Hkv, keep; empty while nothing is pruned), and k_full (B, Hkv,
    max_len - n_thin, D) for positions [n_thin, max_len). Written in place by `attend`."""

    def __init__(self, batch_size, n_kv_head, max_len, head_dim, pruning: KeyPruning, device=None, dtype=None):
        kw = dict(device=device, dtype=dtype)
        self.pruning = pruning
        self.keep = pruning.keep(head_dim)
        self.v = torch.zeros(batch_size, n_kv_head, max_len, head_dim, **kw)
        self.k_full = torch.zeros(batch_size, n_kv_head, max_len, head_dim, **kw)  # no thin part yet
        self.k_thin = torch.zeros(batch_size, n_kv_head, 0, self.keep, **kw)
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

    def repeat_interleave(self, repeats: int) -> "ThinKState":
        """A copy with each row repeated `repeats` times (row b -> rows b * repeats + g): values,
        thin and full keys and each row's kept channels."""
        return repeat_rows(self, repeats)

    def key_nbytes(self) -> int:
        """Bytes of the stored keys (thin and full width), the kept-channel indices left out."""
        return self.k_thin.nbytes + self.k_full.nbytes

    def attend(self, q, k, v, positions: Positions, attend):
        """Append the new tokens' k, v (B, Hkv, T, D) and attend with q (B, H, T, D) -> o (B, H, T, D).

        A first prefill (positions.start == 0) prunes and attends through `attend`, the mixer's
        kernel, to the full keys; later tokens attend through `thin_attention`, or through
        `attend` while nothing is pruned (exactly the plain cache's computation)."""
        start, T = positions.start, q.shape[2]
        mask = positions.key_padding_mask
        if start == 0:
            self._prune(q, k, mask)
        n = self.n_thin
        if start == 0 and n:  # the prompt itself attends to its full keys (in the cache's dtype)
            self.v[:, :, :T] = v
            return attend(q, k.to(self.v.dtype).to(q.dtype), self.v[:, :, :T].to(q.dtype), mask)
        self.k_full[:, :, start - n:start - n + T] = k
        self.v[:, :, start:start + T] = v
        # A no-op unless the cache was made in another dtype than the activations.
        k_full, v_all = self.k_full[:, :, :start + T - n].to(q.dtype), self.v[:, :, :start + T].to(q.dtype)
        if n == 0:
            return attend(q, k_full, v_all, mask)
        return thin_attention(q, self.k_thin, self.kept, k_full, v_all, mask)

    def _prune(self, q, k, mask) -> None:
        """Choose each KV head's channels from the prompt and store its old keys thin."""
        P, D = k.shape[2], k.shape[3]
        n_thin = max(P - self.pruning.recent_size, 0) if self.keep < D else 0
        self.resize(n_thin)
        if n_thin:
            W = min(self.pruning.obs_window, P)
            scores = channel_scores(q[:, :, P - W:], k, None if mask is None else mask[:, P - W:], mask)
            kept = kept_channels(scores, self.keep)  # (B, Hkv, keep)
            self.kept.copy_(kept)
            idx = kept[:, :, None, :].expand(-1, -1, n_thin, -1)
            self.k_thin.copy_(k[:, :, :n_thin].gather(3, idx))
            self.k_full[:, :, :P - n_thin] = k[:, :, n_thin:]


class ThinKAttention(SDPAttention):
    """ThinK mixer: `SDPAttention` whose decoding states prune keys (see the module docstring).

    ratio, obs_window, recent_size: the `KeyPruning` its `init_state` uses by default; a
    decoder's own key_pruning (`rizzrun.decoders.think.ThinK`) replaces it.
    """

    # Its decoding state prunes key channels (a long enough prompt reads thinner keys), which training,
    # plain softmax attention, must not: rollout log-probs take the parallel forward.
    trains_through_state = False

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, ratio: float = 0.4, obs_window: int = 32, recent_size: int = 32):
        super().__init__(d_model, n_head, n_kv_head, head_dim, layer_idx, n_layer)
        self.key_pruning = KeyPruning(ratio, obs_window, recent_size)
        self.ratio, self.obs_window, self.recent_size = ratio, obs_window, recent_size
        self.keep = self.key_pruning.keep(head_dim)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None, key_pruning=None):
        key_pruning = self.key_pruning if key_pruning is None else key_pruning
        return super().init_state(batch_size, max_len, device=device, dtype=dtype, key_pruning=key_pruning)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, ratio={self.ratio}, obs_window={self.obs_window}, "
                f"recent_size={self.recent_size}")


def plain_softmax_kernel(mixer) -> bool:
    """Whether the mixer's kernel is plain softmax attention (SDPA's or the naive one), which
    `thin_attention` reproduces; a subclass with its own `attend` (SSMax's) is not."""
    return type(mixer).attend in (SDPAttention.attend, NaiveAttention.attend)
