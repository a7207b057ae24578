"""Nested (bit-prefix) weight quantisation: one set of 8-bit codes serves every precision 2..8.

The uniform CPU variant of Any-Precision LLM (Park et al., arXiv 2402.10517) that PMPD (Chen et al.,
arXiv 2410.13461) switches between while decoding. Per output channel (row) of a weight W (out, in),
asymmetric 8-bit round-to-nearest:

    Δ = (max − min) / 255,   q8 = clamp(round((w − min) / Δ), 0, 255)          (uint8, stored once)

The k-bit code is the top k bits of q8, exactly as a k-bit bit-plane GEMV reads the top k planes:

    q_k = q8 >> (8 − k)      (so q_k == q_(k+1) >> 1: every code is a prefix of its parent's)

and a k-bit code stands for the centre of the 2^(8−k) 8-bit codes it covers:

    ŵ_k = min + (q_k · 2^(8−k) + (2^(8−k) − 1) / 2) · Δ

(8 bits is plain round-to-nearest; a child bucket's centre lies 2^(6−k)·Δ from its parent's).
A constant row (Δ = 0) keeps q8 = 0 and dequantises to its value at every precision.

The non-uniform variant (`method="kmeans"`, closer to Any-Precision's SqueezeLLM seed + incremental
upscaling; unweighted here, SqueezeLLM weighs by sensitivity): per row, 1-D k-means (Lloyd, 4
centroids initialised at the quantiles of 4 equal-mass bins) gives the 2-bit seed codes; each
further bit splits every cluster in two (2-means inside the cluster, a threshold in 1-D), the new
bit appended as the LSB, up to 8 bits; every level keeps its own per-row table of centroids (the
means of their members; an empty child keeps its parent's), so ŵ_k = LUT_k[row, q_k] and the error
can only go down with each bit. Decision: the seed is 2 bits (not Any-Precision's 3) so that every
view 2..8 exists; the codes are stored as q8 just like the uniform ones.

What is quantised (decision, as Any-Precision does): every `nn.Linear` inside `model.blocks` (the
attention and MLP projections of every layer); the token embedding, the output head and the norms
stay at full precision. Quantisation is fake: `NestedWeights.use(k)` swaps each such layer's
weight tensor (`param.data`) for its dequantised k-bit copy, cached per bit-width, and puts the
original tensors back afterwards: the model is never copied and its Parameter objects stay the
same. """

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BITS", "METHODS", "NestedCodes", "NestedWeights", "codes", "dequantize", "quantize",
           "quantized_linears"]

BITS = tuple(range(2, 9))  # the precisions a k-bit view can have


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"bits={bits!r} is not allowed: it must be an integer in 2..8")
    return bits


@dataclass
class NestedCodes:
    """One weight (out, in) in nested form: q8 (out, in) uint8, and either low and delta (out, 1)
    float32 (uniform: the row minimum and the 8-bit step Δ) or luts {k: (out, 2^k) float32}
    (k-means: each level's centroids)."""

    q8: torch.Tensor
    low: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    luts: dict | None = None


METHODS = ("uniform", "kmeans")


@torch.no_grad()
def quantize(weight: torch.Tensor, method: str = "uniform", iters: int = 10) -> NestedCodes:
    """Per-row nested 8-bit codes of a 2-D weight (out, in), computed in float32: uniform
    asymmetric round-to-nearest, or `kmeans` (seed + splitting, `iters` Lloyd steps per level)."""
    if weight.ndim != 2:
        raise ValueError(f"quantize takes a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed: it must be one of {', '.join(METHODS)}")
    w = weight.detach().float()
    if method == "kmeans":
        return _kmeans(w, iters)
    low = w.min(dim=1, keepdim=True).values
    delta = (w.max(dim=1, keepdim=True).values - low) / 255
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    q8 = torch.where(delta > 0, torch.round((w - low) / safe), torch.zeros_like(w)).clamp_(0, 255)
    return NestedCodes(q8.to(torch.uint8), low, delta)


def _means(w, codes, k, fallback):
    """Per-row mean of the weights of each code (out, k); `fallback` (out, k) where a code is empty."""
    sums = torch.zeros(w.shape[0], k, dtype=w.dtype, device=w.device).scatter_add_(1, codes, w)
    counts = torch.zeros_like(sums).scatter_add_(1, codes, torch.ones_like(w))
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)


def _kmeans(w: torch.Tensor, iters: int) -> NestedCodes:
    seed = 2
    k = 1 << seed
    centres = torch.quantile(w, (torch.arange(k, dtype=w.dtype, device=w.device) + 0.5) / k, dim=1).T.contiguous()
    for _ in range(iters):
        codes = (w[:, :, None] - centres[:, None, :]).abs().argmin(-1)
        centres = _means(w, codes, k, centres)
    codes = (w[:, :, None] - centres[:, None, :]).abs().argmin(-1)
    centres = _means(w, codes, k, centres)  # each centroid the mean of its members
    luts = {seed: centres}
    for bits in range(seed + 1, 9):
        parent = centres.gather(1, codes)  # (out, in): each weight's cluster centroid
        child = 2 * codes + (w > parent).long()
        fallback = centres.repeat_interleave(2, dim=1)
        for _ in range(iters):
            c = _means(w, child, 2 * k, fallback)
            mid = (c[:, 0::2] + c[:, 1::2]).gather(1, codes) / 2  # the split point of each cluster
            child = 2 * codes + (w > mid).long()
        codes, k = child, 2 * k
        centres = luts[bits] = _means(w, codes, k, fallback)
    return NestedCodes(codes.to(torch.uint8), luts=luts)


def codes(nested: NestedCodes, bits: int) -> torch.Tensor:
    """The k-bit codes (out, in) uint8: the top `bits` bits of q8."""
    return nested.q8 >> (8 - _check_bits(bits))


@torch.no_grad()
def dequantize(nested: NestedCodes, bits: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ŵ_k (out, in): each k-bit code's bucket centre, in `dtype` (default float32)."""
    shift = 8 - _check_bits(bits)
    if nested.luts is not None:
        return nested.luts[bits].gather(1, codes(nested, bits).long()).to(dtype or torch.float32)
    centre = codes(nested, bits).float() * (1 << shift) + ((1 << shift) - 1) / 2
    return (nested.low + centre * nested.delta).to(dtype or torch.float32)


def quantized_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(qualified name, layer) of every nn.Linear in `model.blocks`, in module order."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        raise ValueError(f"nested quantisation reads the nn.Linear layers of model.blocks; {type(model).__name__} "
                         "has no `blocks` module (rizzrun's Llama and RWKV have one)")
    found = [(f"blocks.{name}", m) for name, m in blocks.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__}.blocks holds no nn.Linear layer to quantise")
    return found


class NestedWeights:
    """A model's block Linear weights in nested form, and the switch between their precisions.

    method: "uniform" or "kmeans" (see the module docstring).
    use(bits) / set_bits(bits): every quantised layer's weight becomes ŵ_bits (made once per
    bit-width, then cached; `bits` None = the original weights); restore() puts the originals back.
    is_current(model): False once the model's weights changed (an optimizer step, a load, a new
    Parameter), i.e. these codes are stale and must be rebuilt.
    """

    def __init__(self, model: nn.Module, method: str = "uniform"):
        self.names, layers = zip(*quantized_linears(model))
        self.method = method
        self.params = [layer.weight for layer in layers]
        self.originals = [p.data for p in self.params]
        self.codes = [quantize(w, method) for w in self.originals]
        self.bits: int | None = None
        self._cache: dict[int, list[torch.Tensor]] = {}
        self._stamp = self._fingerprint(model)
        self.quantized_params = sum(w.numel() for w in self.originals)
        self.total_params = sum(p.numel() for p in model.parameters())  # shared ones counted once

    def _fingerprint(self, model) -> tuple:
        layers = [layer for _, layer in quantized_linears(model)]
        return tuple((id(layer.weight), layer.weight.data_ptr(), layer.weight._version) for layer in layers)

    def is_current(self, model: nn.Module) -> bool:
        if self.bits is not None:
            return True  # mid-generation: the swapped tensors are ours
        try:
            return self._fingerprint(model) == self._stamp
        except ValueError:
            return False

    def weights(self, bits: int) -> list[torch.Tensor]:
        """The dequantised ŵ_bits of every layer, in the original weights' dtype and device."""
        bits = _check_bits(bits)
        if bits not in self._cache:
            # Ordinary tensors even when called under inference_mode, so a model used later with
            # autograd never meets an inference tensor.
            with torch.inference_mode(False), torch.no_grad():
                self._cache[bits] = [dequantize(c, bits, w.dtype).to(w.device)
                                     for c, w in zip(self.codes, self.originals)]
        return self._cache[bits]

    def set_bits(self, bits: int | None) -> None:
        if bits == self.bits:
            return
        new = self.originals if bits is None else self.weights(bits)
        for p, w in zip(self.params, new):
            p.data = w
        self.bits = bits

    def restore(self) -> None:
        """Put the original weights back (bit-identical tensors: the very same storage)."""
        for p, w in zip(self.params, self.originals):
            p.data = w
        self.bits = None

    @contextmanager
    def use(self, bits: int | None):
        """`with nested.use(4): model(x)` runs the 4-bit model; the original weights afterwards,
        also on an exception."""
        try:
            self.set_bits(bits)
            yield self
        finally:
            self.restore()
