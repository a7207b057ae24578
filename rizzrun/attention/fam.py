"""FAMAttention: block sliding-window attention (BSWA) + feedback attention memory (TransformerFAM,
Hwang et al., arXiv 2404.09173).

The sequence is cut into blocks of L tokens. Block tau's queries see, in one softmax,
[the previous M blocks' keys (memory segment) ; the F memory tokens FAM_{tau-1} ; their own block,
causally]. When block tau is complete, the F memory queries read [the whole block ; FAM_{tau-1}]
and update the memory (spec section 5, `fam_block_mask`):

    FAM_tau = FAM_{tau-1} + out(attn(q(n(FAM_{tau-1})) -> [k, v of block tau ; of n(FAM_{tau-1})]))

with n = parameter-free RMS normalisation and q, k, v, out the layer's own projections (no new
weights but the initial memory FAM_0, a learned (F, C) "prompt" per layer). F = 0 is plain BSWA;
memory_blocks=None keeps every previous block (F = 0 then equals causal attention).

Decisions where the paper or the spec left a choice (tested in tests/test_fam.py):
- Deviation: the paper runs the FAM tokens through the whole layer (attention, residual, norm,
  FFN). A rizzrun mixer owns only the token-mixing sub-layer, so the memory lives in the mixer's
  input space and its update is the residual one above, without the block's FFN. FAM_0 is
  initialised like the embeddings (normal, std) and, as tokens are, normalised before projection.
- fam_flow: same layer, next block (the memory is a per-layer recurrent state). The paper's other
  reading (hand the memory to the next layer) cannot be expressed inside one layer's mixer.
- RoPE: FAM_{tau-1} as keys sits at block tau's first position s_tau (for block tau's queries and
  for the update of tau alike); the update's queries sit at block tau's last position. So every
  query-key distance is >= 0 and RoPE stays relative.
- Left padding: blocks are aligned to each row's first real token, so a left-padded row gives the
  unpadded row's outputs (parallel: each row is shifted to start at column 0 and back; decoding:
  per-row block phases). Padded positions output zeros.
- No "random state passing" (a training-data choice, not a mixer's) and no truncated backprop:
  training backpropagates through the whole FAM chain of the sequence.

Decoding state (`FAMState`): a ring of the last M blocks + the current one, k/v (B, Hkv, (M+1)L, D),
with the local position held by each slot, and the memory (B, F, C) with its keys/values; its
size does not depend on max_len (for M=None the ring holds max_len positions).

Shapes: B batch, T tokens, C d_model, H heads, Hkv kv heads, D head_dim, L block_size,
M memory_blocks, F fam_len.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as tF
from torch import nn

from rizzrun.attention.mixer import Positions, repeat_rows
from rizzrun.attention.softmax import SoftmaxAttention, apply_rope

_NORM_EPS = 1e-5


def fam_block_mask(block_size: int, fam_len: int, n_mem: int, device=None) -> torch.Tensor:
    """(L + F, n_mem + F + L) bool, True = visible; queries [block ; FAM], keys [mem ; FAM ; block]
    (spec section 5): block -> mem, FAM: all; block -> block: causal; FAM -> mem: none;
    FAM -> FAM, block: all."""
    L, F = block_size, fam_len
    mask = torch.zeros(L + F, n_mem + F + L, dtype=torch.bool, device=device)
    mask[:L, :n_mem + F] = True
    mask[:L, n_mem + F:] = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    mask[L:, n_mem:] = True
    return mask


def _attend(q, k, v, mask):
    """softmax attention with a bool mask (True = visible) broadcast to (B, H, Tq, Tk); a query
    that sees no key returns zeros. q (B, H, Tq, D), k, v (B, Hkv, Tk, D)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    sees = mask.any(dim=-1, keepdim=True)
    o = tF.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask | ~sees)
    return o.masked_fill(~sees, 0.0)


class FAMState:
    """Decoding state of one FAM layer (see the module docstring); written in place."""

    def __init__(self, batch_size, n_kv_head, head_dim, window, fam_len, d_model, device=None, dtype=None):
        B = batch_size
        self.k = torch.zeros(B, n_kv_head, window, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.slot_pos = torch.full((B, window), -1, dtype=torch.long, device=device)  # -1: empty
        self.fam = torch.zeros(B, fam_len, d_model, device=device, dtype=dtype)  # FAM_{tau-1} or FAM_tau
        self.fam_k = torch.zeros(B, n_kv_head, fam_len, head_dim, device=device, dtype=dtype)  # of FAM_{tau-1}
        self.fam_v = torch.zeros_like(self.fam_k)

    def reset(self) -> None:
        self.slot_pos.fill_(-1)  # the memory is set to FAM_0 by the first forward (start 0)

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v, self.slot_pos, self.fam, self.fam_k, self.fam_v))

    def repeat_interleave(self, repeats: int) -> "FAMState":
        """A copy with each row repeated `repeats` times (row b -> rows b * repeats + g)."""
        return repeat_rows(self, repeats)


class FAMAttention(SoftmaxAttention):
    """TransformerFAM token mixer (arXiv 2404.09173); x (B, T, C) -> (B, T, C).

    block_size L >= 1; memory_blocks M >= 0 previous blocks fully visible (None: all);
    fam_len F >= 0 memory tokens (0: plain BSWA). Parameters: q, k, v, out as `SoftmaxAttention`,
    plus `fam_init` (F, C) when F > 0.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, block_size: int = 1024, memory_blocks: Optional[int] = 1, fam_len: int = 64):
        super().__init__(d_model, n_head, n_kv_head, head_dim, layer_idx, n_layer)
        for name, value, low in (("block_size", block_size, 1), ("memory_blocks", memory_blocks, 0),
                                 ("fam_len", fam_len, 0)):
            if name == "memory_blocks" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}"
                                 + (" or None (every previous block)" if name == "memory_blocks" else ""))
        self.block_size, self.memory_blocks, self.fam_len, self.d_model = block_size, memory_blocks, fam_len, d_model
        self.fam_init = nn.Parameter(torch.zeros(fam_len, d_model)) if fam_len else None

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        super().reset_parameters(std, out_std)
        if self.fam_init is not None:
            nn.init.normal_(self.fam_init, std=std)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> FAMState:
        L, M = self.block_size, self.memory_blocks
        window = (M + 1) * L if M is not None else math.ceil(max_len / L) * L
        return FAMState(batch_size, self.n_kv_head, self.head_dim, window, self.fam_len, self.d_model,
                        device=device, dtype=dtype)

    # --- the memory's projections ----------------------------------------------------------------

    def _fam_kv(self, fam, cos, sin):
        """k (rotated at cos/sin), v (B, Hkv, F, D) of the memory fam (B, F, C); cos (D,) or (B, D)."""
        B, F, _ = fam.shape
        h = tF.rms_norm(fam, (fam.shape[-1],), eps=_NORM_EPS)
        k = self.k(h).view(B, F, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v(h).view(B, F, self.n_kv_head, self.head_dim).transpose(1, 2)
        return apply_rope(k, *_per_row(cos, sin)), v

    def _fam_q(self, fam, cos, sin):
        B, F, _ = fam.shape
        h = tF.rms_norm(fam, (fam.shape[-1],), eps=_NORM_EPS)
        q = self.q(h).view(B, F, self.n_head, self.head_dim).transpose(1, 2)
        return apply_rope(q, *_per_row(cos, sin))

    def _fam_update(self, fam, o):
        """FAM_tau = FAM_{tau-1} + out(o); o (B, H, F, D) the memory queries' attention output."""
        B, _, F, _ = o.shape
        return fam + self.out(o.transpose(1, 2).reshape(B, F, -1))

    # --- forward ---------------------------------------------------------------------------------

    def forward(self, x, positions: Positions, state: FAMState | None = None):
        if state is not None:
            return self._forward_cached(x, positions, state)
        return self._forward_parallel(x, positions)

    def _forward_parallel(self, x, positions: Positions):
        """Training: block by block, one attention per block with `fam_block_mask`."""
        B, T, _ = x.shape
        L, M, F = self.block_size, self.memory_blocks, self.fam_len
        q, k, v = self.project(x, positions)  # RoPE at the absolute positions
        mask = positions.key_padding_mask
        offset = None
        if mask is not None:  # shift each row so that its first real token is at column 0
            offset = (~mask[:, positions.start:]).sum(dim=1)  # (B,)
            cols = torch.arange(T, device=x.device)
            src = (cols[None, :] + offset[:, None]).clamp(max=T - 1)  # (B, T)
            q, k, v = (_gather_time(t, src) for t in (q, k, v))
        n_blocks = -(-T // L)
        pad = n_blocks * L - T  # the last block's missing tokens: outputs dropped, never read
        q, k, v = (tF.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        fam = self.fam_init.expand(B, F, -1) if F else None
        base = 0 if offset is None else offset  # a row's absolute position of local position 0
        outs, masks = [], {}
        for tau in range(n_blocks):
            a = tau * L
            lo = 0 if M is None else max(tau - M, 0) * L
            n_mem = a - lo
            if n_mem not in masks:
                masks[n_mem] = fam_block_mask(L, F, n_mem, device=x.device)
            queries, keys, values = q[:, :, a:a + L], k[:, :, lo:a + L], v[:, :, lo:a + L]
            if F:
                s = _table_rows(positions, base + a, T)
                e = _table_rows(positions, base + a + L - 1, T)
                fk, fv = self._fam_kv(fam, *s)
                queries = torch.cat((queries, self._fam_q(fam, *e)), dim=2)
                keys = torch.cat((keys[:, :, :n_mem], fk, keys[:, :, n_mem:]), dim=2)
                values = torch.cat((values[:, :, :n_mem], fv, values[:, :, n_mem:]), dim=2)
            o = _attend(queries, keys, values, masks[n_mem])
            outs.append(o[:, :, :L])
            if F:
                fam = self._fam_update(fam, o[:, :, L:])
        o = torch.cat(outs, dim=2)[:, :, :T]
        if offset is not None:  # shift back; padded positions output zeros
            cols = torch.arange(T, device=x.device)
            src = cols[None, :] - offset[:, None]
            o = _gather_time(o, src.clamp(min=0)).masked_fill((src < 0)[:, None, :, None], 0.0)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))

    @torch.no_grad()
    def _forward_cached(self, x, positions: Positions, state: FAMState):
        """Prefill/decoding: the chunk is cut where any row's block starts; each piece writes its
        keys into the ring, attends, and updates the memory of the rows whose block it completes."""
        B, T, _ = x.shape
        L, F = self.block_size, self.fam_len
        start = positions.start
        if start == 0:  # an empty cache: the memory starts as FAM_0
            state.slot_pos.fill_(-1)
            if F:
                state.fam.copy_(self.fam_init.detach().expand(B, F, -1))
        q, k, v = self.project(x, positions)
        mask = positions.key_padding_mask
        offset = (~mask).sum(dim=1) if mask is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        local = start + torch.arange(T, device=x.device)[None, :] - offset[:, None]  # (B, T); < 0: padding
        starts = ((local >= 0) & (local % L == 0)).any(dim=0)
        cuts = [0] + [t for t in starts.nonzero().flatten().tolist() if t > 0] + [T]
        outs = [self._piece(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], local[:, a:b], positions, a, b, state)
                for a, b in zip(cuts[:-1], cuts[1:])]
        o = torch.cat(outs, dim=2)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))

    def _piece(self, q, k, v, r, positions, a, b, state: FAMState):
        """Tokens [a, b) of the chunk, each row within one block; r (B, S) their local positions."""
        B, _, S, _ = q.shape
        L, M, F = self.block_size, self.memory_blocks, self.fam_len
        W = state.k.shape[2]
        real = r >= 0
        rows, cols = real.nonzero(as_tuple=True)
        slots = r[rows, cols] % W
        state.k[rows, :, slots] = k[rows, :, cols].to(state.k.dtype)
        state.v[rows, :, slots] = v[rows, :, cols].to(state.v.dtype)
        state.slot_pos[rows, slots] = r[rows, cols]

        first, last = r[:, 0], r[:, -1]
        if F:
            starting = (first >= 0) & (first % L == 0)
            if starting.any():  # keys of FAM_{tau-1}, at block tau's first position
                fk, fv = self._fam_kv(state.fam, positions.cos[a], positions.sin[a])
                keep = starting[:, None, None, None]
                state.fam_k.copy_(torch.where(keep, fk.to(state.fam_k.dtype), state.fam_k))
                state.fam_v.copy_(torch.where(keep, fv.to(state.fam_v.dtype), state.fam_v))

        held = state.slot_pos[:, None, :]  # (B, 1, W)
        lo = torch.zeros_like(r) if M is None else (r.div(L, rounding_mode="floor") - M) * L
        visible = (held >= 0) & (held <= r[:, :, None]) & (held >= lo[:, :, None])  # (B, S, W)
        queries, keys, values = q, state.k, state.v
        completing = (last >= 0) & (last % L == L - 1)
        update = F > 0 and bool(completing.any())
        if F:
            keys, values = torch.cat((keys, state.fam_k), dim=2), torch.cat((values, state.fam_v), dim=2)
            visible = torch.cat((visible, real[:, :, None].expand(B, S, F)), dim=2)
        if update:  # the memory queries, at the block's last position: [whole block ; FAM_{tau-1}]
            queries = torch.cat((queries, self._fam_q(state.fam, positions.cos[b - 1], positions.sin[b - 1])), dim=2)
            block_lo = last.div(L, rounding_mode="floor") * L
            in_block = (state.slot_pos >= block_lo[:, None]) & (state.slot_pos <= last[:, None])  # (B, W)
            fam_rows = torch.cat((in_block[:, None, :].expand(B, F, W),
                                  torch.ones(B, F, F, dtype=torch.bool, device=q.device)), dim=2)
            visible = torch.cat((visible, fam_rows), dim=1)
        o = _attend(queries, keys, values, visible[:, None])
        if update:
            new = self._fam_update(state.fam, o[:, :, S:].to(state.fam.dtype))
            state.fam.copy_(torch.where(completing[:, None, None], new, state.fam))
        return o[:, :, :S]

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, block_size={self.block_size}, memory_blocks={self.memory_blocks}, "
                f"fam_len={self.fam_len}")


def _gather_time(t, src):
    """t (B, H, T, D) -> t[b, :, src[b, j]] (B, H, Tsrc, D); src (B, Tsrc) long."""
    return t.gather(2, src[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))


def _table_rows(positions: Positions, pos, T: int):
    """The RoPE cos, sin at position(s) pos (int, or (B,) per row) of the chunk, clamped into it
    (a clamped position belongs to an incomplete block, whose memory is never read)."""
    if isinstance(pos, int):
        i = min(pos, T - 1)
    else:
        i = pos.clamp(max=T - 1)
    return positions.cos[i], positions.sin[i]


def _per_row(cos, sin):
    """(D,) -> as is; (B, D) -> (B, 1, 1, D), to broadcast over (B, heads, F, D)."""
    if cos.dim() == 2:
        return cos[:, None, None, :], sin[:, None, None, :]
    return cos, sin
