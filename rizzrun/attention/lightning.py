"""LightningAttention: linear attention with a per-head decay, tiled (Lightning Attention-2).

Qin et al., arXiv 2401.04658; decay from TransNormerLLM (arXiv 2307.14995); gated layer as in
MiniMax-01 (arXiv 2501.08313). Per head, with state S (D x D) and decay lambda_h in (0, 1]:

    S_t = lambda_h S_{t-1} + k_t^T v_t,     o_t = q_t S_t          (no softmax)

q, k, v = SiLU(linear(x)); the heads' outputs (B, T, H*D) go through RMSNorm, are gated by
sigmoid(linear(x)) and projected out. lambda_h is fixed, not learned (learnable decays gave NaNs
in TNL), from `rizzrun.kernels.lightning.lightning_decay(H, layer_idx, n_layer, schedule)`.
No position encoding: the decay orders the tokens. The kernel is `rizzrun.kernels.lightning`
(chunked PyTorch on a CPU, Triton on a GPU). Decoding state: S per head, fp32, (B, H, D, D) —
the same size at any context length. GQA does not apply (there is no KV cache to shrink):
every head has its own k and v and `n_kv_head` is not used.

Decisions: scale 1.0 (the official kernel's; with the output RMSNorm a global factor on q only
moves the norm's epsilon); RMSNorm over all H*D channels (MiniMax-01's); left padding: padded
tokens get k = 0, so they add nothing to S and real tokens see what the unpadded row sees.
"""

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.attention import check_heads
from rizzrun.attention.mixer import Positions, repeat_rows
from rizzrun.kernels.lightning import lightning_attn, lightning_decay, lightning_step
from rizzrun.models.llama import RMSNorm

IMPLS = ("auto", "torch", "triton")


class LinearState:
    """One lightning layer's decoding state: s (B, H, D, D) fp32, whatever the context length."""

    def __init__(self, batch_size, n_head, head_dim, device=None):
        self.s = torch.zeros(batch_size, n_head, head_dim, head_dim, device=device, dtype=torch.float32)

    def reset(self) -> None:
        self.s.zero_()

    def nbytes(self) -> int:
        return self.s.nbytes

    def repeat_interleave(self, repeats: int) -> "LinearState":
        """A copy with each row repeated `repeats` times (row b -> rows b * repeats + g)."""
        return repeat_rows(self, repeats)


class LightningAttention(nn.Module):
    """Gated Lightning Attention-2 mixer; x (B, T, C) -> (B, T, C). See the module docstring.

    decay_schedule: "alibi_tnl" (official code: rate 2^(-8h/H) x (1 - l/(L-1) + 1e-5)) or
    "fla_literal" (flash-linear-attention's g_h = -(8/H)(1 - l/L) h). chunk_size: the block of
    the tiled form. impl: "auto" (Triton on CUDA, chunked PyTorch elsewhere), "torch", "triton".
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, head_dim: int, layer_idx: int = 0,
                 n_layer: int = 1, decay_schedule: str = "alibi_tnl", chunk_size: int = 64, impl: str = "auto",
                 gate: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        check_heads(n_head, n_kv_head, head_dim)
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not a lightning implementation; allowed: {', '.join(IMPLS)}")
        self.n_head, self.head_dim, self.layer_idx, self.n_layer = n_head, head_dim, layer_idx, n_layer
        self.decay_schedule, self.chunk_size, self.impl = decay_schedule, chunk_size, impl
        inner = n_head * head_dim
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.gate = nn.Linear(d_model, inner, bias=False) if gate else None
        self.norm = RMSNorm(inner, norm_eps)  # statistics in fp32, as the model's own norms
        self.out = nn.Linear(inner, d_model, bias=False)
        self.register_buffer("log_decay", torch.empty(n_head), persistent=False)
        self.reset_buffers(None)

    def reset_buffers(self, device=None) -> None:
        decay = lightning_decay(self.n_head, self.layer_idx, self.n_layer, schedule=self.decay_schedule)
        device = self.log_decay.device if device is None else device
        self.log_decay = torch.tensor(decay, dtype=torch.float32, device=device)

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        for linear in (self.q, self.k, self.v, self.gate):
            if linear is not None:
                nn.init.normal_(linear.weight, std=std)
        nn.init.normal_(self.out.weight, std=out_std)
        nn.init.ones_(self.norm.weight)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> LinearState:
        return LinearState(batch_size, self.n_head, self.head_dim, device=device)

    def forward(self, x, positions: Positions, state: LinearState | None = None):
        B, T, _ = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q, k, v = (F.silu(proj(x)).view(shape) for proj in (self.q, self.k, self.v))
        real = positions.new_tokens_mask()
        if real is not None:
            k = k * real[:, :, None, None].to(k.dtype)
        impl = {"auto": "auto", "torch": "chunk", "triton": "triton"}[self.impl]
        if state is None:
            o, _ = lightning_attn(q, k, v, self.log_decay, chunk_size=self.chunk_size, impl=impl)
        elif T == 1:
            o, s = lightning_step(q[:, 0], k[:, 0], v[:, 0], self.log_decay, state.s)
            o = o[:, None]
            state.s.copy_(s)
        else:
            o, s = lightning_attn(q, k, v, self.log_decay, initial_state=state.s, output_final_state=True,
                                  chunk_size=self.chunk_size, impl=impl)
            state.s.copy_(s)
        o = self.norm(o.reshape(B, T, -1).to(x.dtype))
        if self.gate is not None:
            o = o * torch.sigmoid(self.gate(x))
        return self.out(o)

    def extra_repr(self) -> str:
        return (f"n_head={self.n_head}, head_dim={self.head_dim}, layer_idx={self.layer_idx}, "
                f"decay_schedule={self.decay_schedule!r}, chunk_size={self.chunk_size}, impl={self.impl!r}")
