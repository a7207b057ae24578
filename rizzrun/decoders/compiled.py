"""`CompiledStepper`: the decode step of a softmax-attention Llama as one compiled graph
(`torch.compile`, inductor), for decoders built with `compile=True`.

Batch-1 decoding of a small model is overhead-bound: the eager step launches ~110 small kernels
(norms, RoPE, SwiGLU, cache writes, attention), each costing more in dispatch than in
arithmetic. Compiled, the elementwise chains fuse into a few C++ loops, the per-op dispatch is
gone (a C++ wrapper calls the kernels), q/k/v and gate/up are one matmul each (weights
concatenated once per model and stacked over the layers, so the graph has a dozen inputs, not
one per parameter), and the activations stay 2-D (B, C).

One graph per (batch, cache length, dtype), compiled once and never again while decoding: the
number of positions filled, n, is a symbolic size (the rows' padding mask (B, n) is marked
dynamic in that dimension), so every step of every call reuses the graph; the new key and value
are written in place into the static buffers at n - 1 and attention reads the first n
positions, as the eager step does. Cache lengths are rounded up to a power of two (at least 64,
at most max_seq_len), so prompts of different lengths share the graph.

The prompt is prefilled by the model's own eager `step` (its length varies between calls), into
the same cache the compiled step then reads and writes. The compiled step is the eager step's
math (RMSNorm in fp32, RoPE rotate-half, SwiGLU, softmax attention with the padding mask, here
written out: two batched matmuls around a masked softmax, measured faster than the fused SDPA
call for one query per row). Fused loops and fused matmuls may round the last bits differently,
which changes a greedy token only at an exact near-tie; the tests check identical tokens
against the eager step and `transformers`.

Supported: `rizzrun.models.llama.Llama` whose every layer is plain softmax attention
(`SDPAttention` or `NaiveAttention`, the base `forward`, a `KVState` cache), RMSNorm and the
SwiGLU MLP; anything else (recurrent mixers, SSMax, selective attention, a pruned ThinK cache)
raises ValueError naming the layer, and the eager `ModelStepper` stays the way to decode it.
The fused weights are a copy (the model's weight memory once more), rebuilt when a parameter
changes in place (an optimizer step between two generate calls).

Shapes: B batch, L cache length, n positions filled, H heads, Hkv KV heads, D head_dim, V vocab.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F

from rizzrun.attention.naive import NaiveAttention
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.attention.softmax import KVState, SoftmaxAttention
from rizzrun.decoders.loop import ModelStepper

__all__ = ["CompiledStepper", "check_compilable", "compiled_cache_len"]

_MIN_CACHE = 64
_PLAIN_KERNELS = (SDPAttention.attend, NaiveAttention.attend)


def compiled_cache_len(max_len: int, max_seq_len: int) -> int:
    """The cache length the compiled step uses for max_len positions: the next power of two
    >= max(max_len, 64), capped at max_seq_len (never below max_len)."""
    length = max(_MIN_CACHE, 1 << (max(max_len, 1) - 1).bit_length())
    return max(max_len, min(length, max_seq_len))


def check_compilable(model) -> None:
    """ValueError (one line) unless `model` is a Llama whose every mixer is plain softmax
    attention with the base forward: the compiled step rewrites only that mixer's cache write
    and kernel."""
    from rizzrun.models.llama import Llama, RMSNorm, SwiGLU

    if not isinstance(model, Llama):
        raise ValueError(f"decoder compile=true needs a rizzrun Llama with softmax attention, got "
                         f"{type(model).__name__}; use compile=false (the eager step) for this model")
    for i, block in enumerate(model.blocks):
        attn = block.attn
        kind = type(attn)
        if (not isinstance(attn, SoftmaxAttention) or kind.attend not in _PLAIN_KERNELS
                or kind.forward is not SoftmaxAttention.forward or kind.init_state is not SoftmaxAttention.init_state):
            raise ValueError(f"decoder compile=true supports plain softmax attention (SDPAttention, NaiveAttention) "
                             f"only; layer {i}'s token mixer is {kind.__name__}: use compile=false for this model")
        if type(block.mlp) is not SwiGLU:
            raise ValueError(f"decoder compile=true supports the SwiGLU MLP only; layer {i}'s MLP is "
                             f"{type(block.mlp).__name__}: use compile=false for this model")
        if type(block.attn_norm) is not RMSNorm or type(block.mlp_norm) is not RMSNorm:
            raise ValueError(f"decoder compile=true supports RMSNorm only; layer {i} has "
                             f"{type(block.attn_norm).__name__}/{type(block.mlp_norm).__name__}: use compile=false")


def _attend_full(q, k, v, visible):
    """Softmax attention of the newest query over the n filled positions; q (B, H, 1, D), k/v
    (B, Hkv, n, D), visible (B, n) bool (False = left padding) -> (B, H, 1, D)."""
    B, H, _, D = q.shape
    Hkv = k.shape[1]
    q = q.reshape(B, Hkv, H // Hkv, D)  # query head h reads key/value head h // (H / Hkv)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))  # (B, Hkv, G, n)
    scores = scores.masked_fill(~visible[:, None, None, :], -math.inf)
    return (scores.softmax(dim=-1) @ v).reshape(B, H, 1, D)


def _rms_norm(x, weight, eps: float):
    """`rizzrun.models.llama.RMSNorm`'s math: statistics in fp32."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rope(x, cos, sin):
    """`rizzrun.attention.softmax.apply_rope`'s math; x (B, H, 1, D), cos/sin (1, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)


def _decode_step(weights, ids, visible, keys, values, dims):
    """One decode step, pure over a few tensors. ids (B, 1) long; visible (B, n) bool: the rows'
    padding mask over the n positions filled after this step (n is symbolic: one graph for every
    length); keys/values: each layer's buffers (B, Hkv, L, D), written in place at n - 1.
    -> logits (B, V)."""
    H, Hkv, D, eps = dims
    embed, rope_cos, rope_sin, norm, lm_head, attn_norms, qkvs, outs, mlp_norms, gate_ups, downs = weights
    B = ids.shape[0]
    n = visible.shape[1]
    cos = rope_cos[n - 1:n]
    sin = rope_sin[n - 1:n]
    x = F.embedding(ids[:, 0], embed)  # (B, C): one token per row, kept 2-D
    for i in range(qkvs.shape[0]):
        h = F.linear(_rms_norm(x, attn_norms[i], eps), qkvs[i])  # (B, (H + 2 Hkv) D)
        q, k, v = h.split((H * D, Hkv * D, Hkv * D), dim=-1)
        q = _rope(q.reshape(B, H, 1, D), cos, sin)
        k = _rope(k.reshape(B, Hkv, 1, D), cos, sin)
        v = v.reshape(B, Hkv, 1, D)
        k_buf, v_buf = keys[i], values[i]
        k_buf[:, :, n - 1:n] = k.to(k_buf.dtype)
        v_buf[:, :, n - 1:n] = v.to(v_buf.dtype)
        o = _attend_full(q, k_buf[:, :, :n].to(q.dtype), v_buf[:, :, :n].to(q.dtype), visible)
        x = x + F.linear(o.reshape(B, H * D), outs[i])
        g, u = F.linear(_rms_norm(x, mlp_norms[i], eps), gate_ups[i]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(g) * u, downs[i])
    return F.linear(_rms_norm(x, norm, eps), lm_head)


class _Weights:
    """The tensors the compiled step reads: q/k/v and gate/up concatenated (one matmul each) and
    every per-layer weight stacked over the layers (a few graph inputs instead of one per
    parameter). Built once per model, rebuilt only when a parameter was replaced or changed in
    place (an optimizer step between two generate calls): a copy of the weights, kept while the
    model lives."""

    def __init__(self, model):
        self.key = self._key(model)
        blocks = model.blocks
        with torch.no_grad():
            def stack(get):
                return torch.stack([get(b) for b in blocks])

            self.tensors = [t.detach() for t in (
                model.embed.weight, model.rope_cos, model.rope_sin, model.norm.weight, model.lm_head.weight,
                stack(lambda b: b.attn_norm.weight),
                stack(lambda b: torch.cat((b.attn.q.weight, b.attn.k.weight, b.attn.v.weight))),
                stack(lambda b: b.attn.out.weight),
                stack(lambda b: b.mlp_norm.weight),
                stack(lambda b: torch.cat((b.mlp.gate.weight, b.mlp.up.weight))),
                stack(lambda b: b.mlp.down.weight),
            )]

    @staticmethod
    def _key(model):
        return tuple((p.data_ptr(), p._version) for p in model.parameters()) + (
            model.rope_cos.data_ptr(), model.rope_cos._version)


_WEIGHTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _weights(model) -> list:
    cached = _WEIGHTS.get(model)
    if cached is None or cached.key != _Weights._key(model):
        cached = _WEIGHTS[model] = _Weights(model)
    return cached.tensors


# The C++ wrapper calls the kernels without a Python line per kernel (measured faster at batch 1
# on the CPU, for a few more seconds of compile).
_OPTIONS = {"cpp_wrapper": True}
_COMPILED: dict = {}  # backend -> the compiled step, shared by every stepper (one compile cache)


def _get_compiled(backend):
    if backend is None:  # the same function run eagerly (tests check its math without compiling)
        return _decode_step
    if backend not in _COMPILED:
        options = _OPTIONS if backend == "inductor" else None
        _COMPILED[backend] = torch.compile(_decode_step, backend=backend, dynamic=False, fullgraph=True,
                                           options=options)
    return _COMPILED[backend]


class CompiledStepper(ModelStepper):
    """A `ModelStepper` whose decode steps run as one compiled graph (see the module docstring);
    same interface: prefill(ids (B, T), padding (B, T) bool or None) -> logits (B, V),
    step(tokens (B, 1)) -> logits (B, V). backend: torch.compile's ("inductor"), or None to run
    the same step function uncompiled."""

    def __init__(self, model, batch_size: int, max_len: int, device=None, backend: str | None = "inductor",
                 **state_options):
        check_compilable(model)
        if state_options:
            raise ValueError(f"decoder compile=true takes no decoding state options, got "
                             f"{', '.join(sorted(state_options))}; use compile=false")
        self.model = model
        length = compiled_cache_len(max_len, model.config.max_seq_len)
        self.cache = model.init_cache(batch_size, max_len=length, device=device)
        for i, state in enumerate(self.cache.layers):
            if type(state) is not KVState:
                raise ValueError(f"decoder compile=true needs a plain key/value cache; layer {i} keeps "
                                 f"{type(state).__name__}: use compile=false")
        self._keys = [s.k for s in self.cache.layers]
        self._values = [s.v for s in self.cache.layers]
        cfg = model.config
        self._dims = (cfg.n_head, cfg.n_kv_head, cfg.head_dim, float(cfg.norm_eps))
        self._weights = _weights(model)
        self._step = _get_compiled(backend)

    # prefill: ModelStepper's, the model's own eager step into the same buffers

    def expand(self, repeats: int) -> None:
        """After prefill: B * repeats rows (ModelStepper.expand); the step's buffers follow."""
        super().expand(repeats)
        self._keys = [s.k for s in self.cache.layers]
        self._values = [s.v for s in self.cache.layers]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        cache = self.cache
        if cache.pos >= cache.max_len:
            raise ValueError(f"decoding cache overflow: {cache.pos} positions filled, max_len={cache.max_len}")
        visible = cache.mask[:, :cache.pos + 1]
        torch._dynamo.mark_dynamic(visible, 1)
        logits = self._step(self._weights, tokens, visible, self._keys, self._values, self._dims)
        cache.pos += 1
        return logits
