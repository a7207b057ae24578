"""SelectiveAttention: selective attention with context pruning (Leviathan et al., arXiv 2410.02703).

    A = q k^T / sqrt(D) (causal)                    per head, (B, H, Tq, Tk)
    S = ReLU(A[:, selection_head]), S[:, bos] = 0, S[i, i] = 0
    F[i, j] = sum_{k < i} S[k, j]                    shifted cumsum over the queries
    o = softmax(A - F) V                             F subtracted from every head's logits

Parameter-free. `detach_selection` stops the gradient through S (an ablation; the paper has none).
The BOS column is the first *real* key of each row (left padding: the first non-pad token).

Context pruning (`budget`, None = off). At each query, after appending its key, a row holding
more than `budget` keys besides BOS evicts the one with the largest current F (F[i, ·] of that
query; ties: the oldest), one per step, as in the reference implementations; BOS is never
evicted. The query then attends to the survivors, so at most budget + 1 keys are ever held and
the decoding state has budget + 1 slots (positions live in the keys through RoPE, so a freed
slot is reused). A multi-token forward (training, prefill, a chunk) runs the same per-query
eviction over its keys in order, so any chunking gives the token-by-token result, which is
full selective attention with the evicted keys masked to -inf. budget=None, or a budget no row
exceeds, masks nothing: the parallel forward is then bit-identical to no pruning.

Math in fp32 (fp64 for fp64 inputs). Shapes: B batch, H heads, T new tokens, D head_dim.
"""

import math

import torch

from rizzrun.attention.mixer import Positions, repeat_rows
from rizzrun.attention.naive import masked_softmax
from rizzrun.attention.softmax import SoftmaxAttention


def selection_scores(a0, visible, is_bos, is_self):
    """S = ReLU(head-0 logits) with the invisible, BOS and self entries zeroed; all (B, Tq, Tk)
    (is_bos (B, 1, Tk)) -> S (B, Tq, Tk)."""
    return torch.relu(a0).masked_fill(~visible | is_bos | is_self, 0.0)


def accumulated_f(s, f_old):
    """F of each new query: f_old (B, Nold) of the kept keys (0 for the new ones) + the shifted
    cumsum of s (B, Tq, Tk) over the queries -> (B, Tq, Tk). Token by token this adds the rows of
    s in the order a full-sequence cumsum does, so decoding reproduces the parallel F exactly."""
    B, Tq, Tk = s.shape
    shifted = torch.cat([s.new_zeros(B, 1, Tk), s[:, :-1].cumsum(1)], 1)
    return torch.cat([f_old.to(s.dtype), s.new_zeros(B, Tq)], 1)[:, None, :] + shifted


def selective_mask(f, visible_new, alive_old, real_new, is_bos, pos, budget: int | None):
    """Which keys each query attends to after pruning.

    f: (B, Tq, Tk) F of each new query; the keys are Nold kept keys then the Tq new ones
    (Tk = Nold + Tq). visible_new (B, Tq, Tq): causal/padding visibility among the new keys;
    alive_old (B, Nold) bool; real_new (B, Tq); is_bos (B, Tk); pos (B, Tk) positions (ties:
    the oldest goes first). Returns visible (B, Tq, Tk) bool and alive (B, Tk) after the last query.
    """
    B, Tq, Tk = f.shape
    n_old = Tk - Tq
    if budget is None:
        visible = torch.cat([alive_old[:, None, :].expand(B, Tq, n_old), visible_new], 2)
        return visible, torch.cat([alive_old, real_new], 1)
    alive = torch.cat([alive_old, torch.zeros_like(real_new)], 1)
    visible = torch.zeros(B, Tq, Tk, dtype=torch.bool, device=f.device)
    rows = torch.arange(B, device=f.device)
    far = torch.iinfo(pos.dtype).max
    for i in range(Tq):
        alive[:, n_old + i] = real_new[:, i]
        evictable = alive & ~is_bos
        over = evictable.sum(1) > budget
        if over.any():
            score = f[:, i].masked_fill(~evictable, -math.inf)
            top = score == score.max(1, keepdim=True).values
            victim = pos.masked_fill(~(top & evictable), far).argmin(1)
            alive[rows[over], victim[over]] = False
        visible[:, i] = alive
    return visible, alive


def selective_attention(q, k, v, f_old=None, alive_old=None, pos=None, key_padding_mask=None, budget=None,
                        selection_head: int = 0, detach_selection: bool = False, bos_pos=None):
    """Selective attention of Tq new queries over Nold kept keys + the Tq new keys.

    q (B, H, Tq, D); k, v (B, Hkv, Nold + Tq, D), the new keys last; f_old (B, Nold) their F so
    far, alive_old (B, Nold) bool, pos (B, Nold + Tq) long positions (default: Nold == 0,
    positions 0..Tq-1); key_padding_mask (B, Tq) of the new tokens; bos_pos (B,) position of
    each row's first real token. Returns o (B, H, Tq, D), F after the last query (B, Nold + Tq),
    alive (B, Nold + Tq) after the last query.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    n_old = Tk - Tq
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    dev = q.device
    if pos is None:
        pos = torch.arange(Tk, device=dev).expand(B, Tk)
    if f_old is None:
        f_old = torch.zeros(B, n_old, dtype=dtype, device=dev)
        alive_old = torch.ones(B, n_old, dtype=torch.bool, device=dev)
    real_new = (torch.ones(B, Tq, dtype=torch.bool, device=dev) if key_padding_mask is None
                else key_padding_mask.to(torch.bool))
    if bos_pos is None:
        bos_pos = torch.zeros(B, dtype=pos.dtype, device=dev)
    group = H // k.shape[1]
    k = k.to(dtype).repeat_interleave(group, dim=1)
    v = v.to(dtype).repeat_interleave(group, dim=1)
    a = q.to(dtype) @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, Tq, Tk)

    causal = torch.ones(Tq, Tq, dtype=torch.bool, device=dev).tril()
    visible_new = causal & real_new[:, None, :]  # a padding key is never seen
    seen = torch.cat([alive_old[:, None, :].expand(B, Tq, n_old), visible_new], 2)  # before pruning
    is_bos = (pos == bos_pos[:, None])
    is_self = torch.zeros(Tq, Tk, dtype=torch.bool, device=dev)
    is_self[:, n_old:] = torch.eye(Tq, dtype=torch.bool, device=dev)
    a0 = a[:, selection_head].detach() if detach_selection else a[:, selection_head]
    s = selection_scores(a0, seen, is_bos[:, None, :], is_self)
    f = accumulated_f(s, f_old)
    visible, alive = selective_mask(f.detach(), visible_new, alive_old, real_new, is_bos, pos, budget)
    weights = masked_softmax(a - f[:, None], visible[:, None])
    f_last = f[:, -1] + s[:, -1]
    return (weights @ v).to(q.dtype), f_last.detach(), alive


class SelectiveState:
    """Decoding state of one selective layer: `slots` keys, values, their F, positions, and which
    slots hold a live key. Without a budget slot = position (max_len slots); with one,
    budget + 1 slots reused as keys are evicted."""

    def __init__(self, batch_size, n_kv_head, slots, head_dim, budget, device=None, dtype=None):
        shape = (batch_size, n_kv_head, slots, head_dim)
        self.budget = budget
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        f_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.f = torch.zeros(batch_size, slots, device=device, dtype=f_dtype)
        self.pos = torch.zeros(batch_size, slots, device=device, dtype=torch.long)
        self.alive = torch.zeros(batch_size, slots, device=device, dtype=torch.bool)

    def reset(self) -> None:
        self.alive.fill_(False)
        self.f.zero_()

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v, self.f, self.pos, self.alive))

    def repeat_interleave(self, repeats: int) -> "SelectiveState":
        """A copy with each row repeated `repeats` times (row b -> rows b * repeats + g)."""
        return repeat_rows(self, repeats)


def first_real(key_padding_mask, B: int, device) -> torch.Tensor:
    """(B,) position of each row's first real token (a position past the row when none yet)."""
    if key_padding_mask is None:
        return torch.zeros(B, dtype=torch.long, device=device)
    L = key_padding_mask.shape[1]
    idx = torch.where(key_padding_mask, torch.arange(L, device=device), L)
    return idx.min(1).values


class SelectiveAttention(SoftmaxAttention):
    """Selective attention mixer; see `SoftmaxAttention` for the mixer API.

    selection_head: the head whose logits select (paper: 0). detach_selection: no gradient
    through S. budget: None (no pruning) or the most keys kept besides BOS (>= 1).
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, selection_head: int = 0, detach_selection: bool = False,
                 budget: int | None = None):
        super().__init__(d_model, n_head, n_kv_head, head_dim, layer_idx, n_layer)
        if not 0 <= selection_head < n_head:
            raise ValueError(f"selection_head={selection_head} must be in [0, n_head={n_head})")
        if budget is not None and budget < 1:
            raise ValueError(f"budget={budget} must be >= 1 (or None: no pruning)")
        self.selection_head, self.detach_selection, self.budget = selection_head, detach_selection, budget

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> SelectiveState:
        slots = max_len if self.budget is None else min(self.budget + 1, max_len)
        return SelectiveState(batch_size, self.n_kv_head, slots, self.head_dim, self.budget, device, dtype)

    def forward(self, x, positions: Positions, state: SelectiveState | None = None):
        B, T, _ = x.shape
        q, k, v = self.project(x, positions)
        mask = positions.key_padding_mask
        new_mask = positions.new_tokens_mask()
        bos = first_real(mask, B, x.device)
        kw = dict(key_padding_mask=new_mask, budget=self.budget, selection_head=self.selection_head,
                  detach_selection=self.detach_selection, bos_pos=bos)
        if state is None:
            o, _, _ = selective_attention(q, k, v, **kw)
            return self.out(o.transpose(1, 2).reshape(B, T, -1))

        start = positions.start
        new_pos = torch.arange(start, start + T, device=x.device).expand(B, T)
        # Slots fill from the lowest free one, so only the first min(start, slots) were ever used;
        # with no eviction yet, the keys are those of budget=None in the same order (bit-identical).
        n_old = min(start, state.k.shape[2])
        k_all = torch.cat([state.k[:, :, :n_old].to(q.dtype), k], 2)
        v_all = torch.cat([state.v[:, :, :n_old].to(q.dtype), v], 2)
        pos_all = torch.cat([state.pos[:, :n_old], new_pos], 1)
        o, f, alive = selective_attention(q, k_all, v_all, state.f[:, :n_old], state.alive[:, :n_old], pos_all, **kw)
        if self.budget is None:  # slot = position
            sl = slice(start, start + T)
            state.k[:, :, sl], state.v[:, :, sl] = k, v
            state.f[:, :start + T], state.pos[:, sl], state.alive[:, :start + T] = f, new_pos, alive
        else:
            self._keep_survivors(state, k_all, v_all, f, pos_all, alive, n_old)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))

    @staticmethod
    def _keep_survivors(state, k_all, v_all, f, pos_all, alive, n_old: int):
        """Write the live keys of (the n_old used slots + the new keys) back into the slots: a
        surviving old key stays in its slot, the r-th surviving new key fills the r-th free slot."""
        B, C = state.alive.shape
        dev = alive.device
        old_alive = torch.zeros(B, C, dtype=torch.bool, device=dev)
        old_alive[:, :n_old] = alive[:, :n_old]
        new_alive = alive[:, n_old:]
        T = new_alive.shape[1]
        free = ~old_alive
        free_rank = free.long().cumsum(1) - 1  # (B, C)
        new_order = torch.sort((~new_alive).long(), dim=1, stable=True).indices  # live new keys first
        take = free & (free_rank < new_alive.sum(1, keepdim=True))
        keep = torch.arange(C, device=dev).clamp(max=n_old - 1) if n_old else torch.zeros(C, dtype=torch.long, device=dev)
        src = torch.where(take, n_old + new_order.gather(1, free_rank.clamp(0, T - 1)), keep)  # (B, C)
        idx = src[:, None, :, None].expand(-1, k_all.shape[1], -1, k_all.shape[3])
        state.k.copy_(k_all.gather(2, idx))
        state.v.copy_(v_all.gather(2, idx))
        state.f.copy_(f.to(state.f.dtype).gather(1, src))
        state.pos.copy_(pos_all.gather(1, src))
        state.alive.copy_(old_alive | take)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, selection_head={self.selection_head}, "
                f"detach_selection={self.detach_selection}, budget={self.budget}")
