"""Llama: a decoder-only transformer (Touvron et al., arXiv 2302.13971; Llama 2, arXiv 2307.09288).

Pre-norm blocks with RMSNorm (arXiv 1910.07467), rotary position embeddings (RoPE, arXiv
2104.09864) in the Hugging Face "rotate_half" channel layout, optionally with Llama 3.1's frequency
scaling (arXiv 2407.21783), a SwiGLU MLP (arXiv 2002.05202) and grouped-query attention (GQA,
arXiv 2305.13245); no biases; input and output embeddings optionally tied. Each block's token
mixer is built by a factory (`rizzrun.attention`: softmax attention with RoPE by default, or any
mixer of the papers), which owns its projections, position encoding, kernel and decoding state;
the model holds the RoPE tables and hands every mixer the positions of the tokens.
Hugging Face Llama folders are read and written by `rizzrun.models.hf_llama` (`load_llama(PATH)`),
which depends on this file, not the reverse.

Shapes: B batch, T time, C = d_model, H = n_head, Hkv = n_kv_head, D = head_dim = C / H, V vocab.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.attention.mixer import DecodingCache, Positions
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.models.llama_sizes import LLAMA_DIM_KEYS, llama_dim_errors, resolve_llama_dims
from rizzrun.models.rope_scaling import normalize_rope_scaling, rope_scaling_problems


@dataclass(frozen=True)
class LlamaConfig:
    """Resolved Llama dimensions; `Llama(**dataclasses.asdict(config))` rebuilds the same shape."""

    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    d_ff: int
    max_seq_len: int
    rope_theta: float
    norm_eps: float
    tie_embeddings: bool
    init_std: float = 0.02
    # None: plain RoPE; else Llama 3.1 scaling in the canonical form of
    # `rizzrun.models.rope_scaling.normalize_rope_scaling`.
    rope_scaling: Optional[dict] = None

    def __post_init__(self):
        errors = llama_dim_errors({k: getattr(self, k) for k in LLAMA_DIM_KEYS})
        errors += rope_scaling_problems(self.rope_scaling)
        if not (isinstance(self.vocab_size, int) and not isinstance(self.vocab_size, bool)
                and self.vocab_size > 0):
            errors.append(f"vocab_size={self.vocab_size!r} must be a positive integer")
        if not (isinstance(self.init_std, (int, float)) and self.init_std > 0):
            errors.append(f"init_std={self.init_std!r} must be a positive number")
        if errors:
            raise ValueError("invalid Llama config:\n  " + "\n  ".join(errors))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich, arXiv 1910.07467); (..., C) -> (..., C)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Statistics in fp32: in bf16 the mean of squares keeps too few bits.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: Optional[dict] = None):
    """RoPE frequencies theta^(-2j/D) for j < D/2, (head_dim // 2,) fp32 (Su et al., arXiv 2104.09864).

    `scaling` {"rope_type": "llama3", factor s, low_freq_factor l, high_freq_factor h,
    original_max_position_embeddings L} is the context extension of Llama 3.1 (the Llama 3 herd,
    arXiv 2407.21783; the rule is that of Meta's reference code, `apply_scaling`, a per-band
    interpolation like YaRN's "NTK-by-parts", arXiv 2309.00071). With wavelength w = 2 pi / f and
    r = L / w (turns over the original context):
    r >= h (short waves, already seen whole in training) keep f; r <= l (long waves) become f / s
    (position interpolation, arXiv 2306.15595); in between, f is blended with weight g = (r - l) / (h - l):
    (1 - g) f / s + g f. This is the formula of transformers' `_compute_llama3_parameters`.
    """
    # fp32, as Llama and transformers compute them: fp64 would be more exact but would drift
    # from the published checkpoints' logits at long positions.
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling is None:
        return inv_freq
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    turns = scaling["original_max_position_embeddings"] / (2 * math.pi / inv_freq)  # r above
    weight = ((turns - low) / (high - low)).clamp(0.0, 1.0)  # g: 0 = long waves, 1 = short waves
    return (1 - weight) * inv_freq / factor + weight * inv_freq


def rope_tables(max_seq_len: int, head_dim: int, theta: float, scaling: Optional[dict] = None):
    """cos and sin of the RoPE angles (Su et al., arXiv 2104.09864), each (max_seq_len, head_dim).

    Channel j and j + D/2 form a rotated pair (the "rotate_half" layout of Hugging Face Llama
    checkpoints, whose q/k weights are permuted for it), so both halves share frequency j.
    `scaling`: Llama 3.1 frequency scaling (see `rope_inv_freq`), None for plain RoPE.
    """
    inv_freq = rope_inv_freq(head_dim, theta, scaling)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer, arXiv 2002.05202); (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.gate.weight, std=std)
        nn.init.normal_(self.up.weight, std=std)
        nn.init.normal_(self.down.weight, std=out_std)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x)); (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: LlamaConfig, mixer: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = mixer
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = mlp

    def forward(self, x, positions: Positions, state=None):
        x = x + self.attn(self.attn_norm(x), positions, state)
        return x + self.mlp(self.mlp_norm(x))


def _layer_state(mixer, layer_idx: int, batch_size, max_len, device, dtype, state_options: dict):
    """mixer.init_state(...) with the decoder's state_options; ValueError naming the layer when
    its mixer takes none of them (a method that needs, e.g., softmax attention's key cache)."""
    if not state_options:
        return mixer.init_state(batch_size, max_len, device=device, dtype=dtype)
    try:
        return mixer.init_state(batch_size, max_len, device=device, dtype=dtype, **state_options)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise ValueError(f"layer {layer_idx}'s token mixer {type(mixer).__name__} does not take the decoding "
                         f"state option(s) {', '.join(sorted(state_options))}: this decoder needs a mixer "
                         "that keeps a softmax key/value cache (SDPAttention, NaiveAttention, ThinKAttention)") from None


class Llama(nn.Module):
    """Llama language model: input_ids (B, T) -> logits (B, T, V).

    `size` picks a preset from `rizzrun.models.llama_sizes.LLAMA_SIZES`; any dimension given
    (not None) overrides it. `attention` is the token-mixer factory (`rizzrun.attention`), called
    once per layer as `attention(d_model=, n_head=, n_kv_head=, head_dim=, layer_idx=, n_layer=)`;
    None means `SDPAttention` (softmax attention with RoPE). `mlp` is the feed-forward factory,
    called per layer as `mlp(d_model=, d_ff=)`; None means `SwiGLU`.
    `rope_scaling`: None (plain RoPE) or Llama 3.1's {"rope_type": "llama3", "factor",
    "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"} (see `rope_inv_freq`).

    The RoPE tables are non-persistent buffers, so the model can be built on the meta device;
    after `to_empty(device=...)` call `reset_buffers()` and `reset_parameters()`, or, to load weights
    without a copy, `reset_buffers(device)` and `load_state_dict(..., assign=True)` (as
    `rizzrun.models.hf_llama.load_llama` does).
    """

    def __init__(self, vocab_size: int, size: str = "tiny", d_model=None, n_layer=None, n_head=None,
                 n_kv_head=None, d_ff=None, max_seq_len=None, rope_theta=None, norm_eps=None,
                 tie_embeddings=None, init_std: float = 0.02, attention=None,
                 rope_scaling: Optional[dict] = None, mlp=None):
        super().__init__()
        dims = resolve_llama_dims(size, d_model=d_model, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                                  d_ff=d_ff, max_seq_len=max_seq_len, rope_theta=rope_theta,
                                  norm_eps=norm_eps, tie_embeddings=tie_embeddings)
        dims["rope_scaling"] = normalize_rope_scaling(rope_scaling)
        self.config = cfg = LlamaConfig(vocab_size=vocab_size, **dims, init_std=init_std)
        attention = SDPAttention if attention is None else attention
        mlp = SwiGLU if mlp is None else mlp
        for name, factory in (("attention", attention), ("mlp", mlp)):
            if not callable(factory):
                raise ValueError(f"{name}={factory!r} must be a factory (a class or a partial) or None "
                                 f"for the default ({'SDPAttention' if name == 'attention' else 'SwiGLU'})")

        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg, attention(d_model=cfg.d_model, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head,
                                 head_dim=cfg.head_dim, layer_idx=i, n_layer=cfg.n_layer),
                  mlp(d_model=cfg.d_model, d_ff=cfg.d_ff))
            for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.reset_buffers()
        self.reset_parameters()

    def to_empty(self, *, device, recurse: bool = True):
        """Materialise a `meta` model; re-ties the embeddings, which `Module.to_empty` replaces
        by two separate tensors (the output layer would then stay uninitialised memory)."""
        super().to_empty(device=device, recurse=recurse)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        return self

    def reset_buffers(self, device=None) -> None:
        """(Re)compute what no checkpoint holds, on `device` (None: where it lives now): the RoPE
        tables (max_seq_len, D) and the mixers' own non-persistent buffers (`reset_buffers(device)`
        of a mixer that has one)."""
        cfg = self.config
        device = self.rope_cos.device if device is None else device
        with torch.device(device):
            cos, sin = rope_tables(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.rope_cos, self.rope_sin = cos, sin
        for block in self.blocks:
            for part in (block.attn, block.mlp):
                if hasattr(part, "reset_buffers"):
                    part.reset_buffers(device)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """normal(0, init_std) weights, RMSNorm gains 1; each mixer initialises its own
        (`reset_parameters(std, out_std)`), out_std for what it writes into the residual stream."""
        std = self.config.init_std
        # Every block adds two outputs (attention, MLP) to the residual stream, so its variance
        # at init grows with 2 * n_layer terms; shrinking those two projections by
        # 1/sqrt(2 * n_layer) keeps it depth-independent (GPT-2, Radford et al. 2019, sec. 2.3).
        out_std = std / math.sqrt(2 * self.config.n_layer)
        nn.init.normal_(self.embed.weight, std=std)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=std)
        for block in self.blocks:
            block.attn.reset_parameters(std, out_std)
            block.mlp.reset_parameters(std, out_std)
            nn.init.ones_(block.attn_norm.weight)
            nn.init.ones_(block.mlp_norm.weight)
        nn.init.ones_(self.norm.weight)

    def num_params(self) -> int:
        """Number of parameters, tied embeddings counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids, key_padding_mask=None):
        """input_ids (B, T) long -> logits (B, T, V); key_padding_mask (B, T) bool, True = real
        token, for left-padded rows (RoPE sees only relative positions, so the shift is harmless)."""
        return self.lm_head(self.hidden_states(input_ids, key_padding_mask))

    def hidden_states(self, input_ids, key_padding_mask=None):
        """input_ids (B, T) long -> the final-norm hidden states (B, T, d_model) the output layer
        reads (what a scalar head, e.g. a reward model's, reads too)."""
        T = self._check_ids(input_ids)
        if T > self.config.max_seq_len:
            raise ValueError(f"input_ids has T={T} tokens but max_seq_len={self.config.max_seq_len}; "
                             f"allowed T <= {self.config.max_seq_len}")
        return self._hidden(input_ids, 0, key_padding_mask, None)

    def init_cache(self, batch_size: int, max_len=None, device=None, dtype=None, **state_options) -> DecodingCache:
        """An empty decoding cache for `step`: every layer's own state (a static KV buffer for
        softmax attention, a fixed-size state for recurrent mixers); max_len defaults to
        max_seq_len, device and dtype to the embedding's (pass the activation dtype when decoding
        under autocast). state_options go to every mixer's `init_state` (a decoder's request, e.g.
        ThinK's key_pruning); a mixer that does not take one raises ValueError naming it."""
        cfg = self.config
        max_len = cfg.max_seq_len if max_len is None else max_len
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if not (isinstance(max_len, int) and 0 < max_len <= cfg.max_seq_len):
            raise ValueError(f"max_len={max_len!r} must be an integer in [1, max_seq_len={cfg.max_seq_len}]")
        weight = self.embed.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        layers = [_layer_state(block.attn, i, batch_size, max_len, device, dtype, state_options)
                  for i, block in enumerate(self.blocks)]
        return DecodingCache(layers, batch_size, max_len, device=device)

    def step(self, input_ids, cache: DecodingCache, key_padding_mask=None, return_hidden: bool = False):
        """Append input_ids (B, Tnew) at positions [cache.pos, cache.pos + Tnew) and return their
        logits (B, Tnew, V); prefill (Tnew = prompt length) and decoding (Tnew = 1) alike.
        key_padding_mask (B, Tnew) marks left padding in a prompt. return_hidden: return
        (logits, hidden) with the final-norm hidden states (B, Tnew, C) the logits are read from.
        The cache is written in place; under autograd the gradients are the parallel forward's when
        `trains_through_cache()` (a fresh cache per forward: a written position is never rewritten)."""
        T = self._check_ids(input_ids)
        pos = cache.pos
        if input_ids.shape[0] != cache.batch_size:
            raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but the cache was made "
                             f"for batch_size={cache.batch_size}")
        if pos + T > cache.max_len:
            raise ValueError(f"decoding cache overflow: {pos} positions filled + Tnew={T} > "
                             f"max_len={cache.max_len}; allowed Tnew <= {cache.max_len - pos} "
                             f"(init_cache with a larger max_len, at most {self.config.max_seq_len})")
        if key_padding_mask is not None:
            cache.mask[:, pos:pos + T] = key_padding_mask
            cache.has_padding = True
        mask = cache.mask[:, :pos + T] if cache.has_padding else None
        if return_hidden:
            hidden = self._hidden(input_ids, pos, mask, cache)
            cache.pos = pos + T
            return self.lm_head(hidden), hidden
        logits = self._logits(input_ids, pos, mask, cache)
        cache.pos = pos + T
        return logits

    def trains_through_cache(self) -> bool:
        """Whether `step` over a fresh `init_cache()` gives the parallel forward's gradients as well as its
        logits: every layer's token mixer says so (`trains_through_state`). Then a group of rows that share
        a prompt can run it once in training (`rizzrun.rollouts.logps.completion_logps`)."""
        return all(getattr(block.attn, "trains_through_state", False) for block in self.blocks)

    def _logits(self, input_ids, pos, key_padding_mask, cache):
        return self.lm_head(self._hidden(input_ids, pos, key_padding_mask, cache))

    def _hidden(self, input_ids, pos, key_padding_mask, cache):
        T = input_ids.shape[1]
        positions = Positions(pos, self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T], key_padding_mask)
        x = self.embed(input_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if cache is None else cache.layers[i])
        return self.norm(x)

    @staticmethod
    def _check_ids(input_ids) -> int:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected (B, T)")
        return input_ids.shape[1]
