"""Weight arithmetic on state dicts (`dict[str, Tensor]`): task vectors, linear averaging, SLERP
of task vectors and LITI (WARP, arXiv:2406.16768, stages 2 and 3), and ParamΔ (arXiv:2504.21023).

Every function takes whole state dicts of one architecture and returns a new one:

- names and shapes must match across the inputs: ValueError naming the first tensor whose shapes
  differ (with both shapes), or the missing / unexpected names (`check_compatible`);
- a vocabulary that grew or shrank (an embedding / lm_head whose row count differs while its other
  dimensions match) is refused with its own message naming the tensor. Decision: refused, not
  "take the post-trained rows" (ParamΔ's alternative): the new rows have no base to subtract, and
  a merge that silently invents them would be a different method; merge models with one vocabulary;
- floating tensors are computed in float32 and cast back to the dtype the reference input (`init`,
  `new_base`) has for that tensor (bf16 in, bf16 out); non-floating tensors (integer buffers,
  counters) are copied from the reference unchanged;
- tensors that share storage in every input (tied embedding and lm_head) are computed once and
  share it in the result.

Shapes: every tensor is treated as one vector (its flattened elements); SLERP is layer-wise, one
angle per tensor, never over the whole model (the paper's choice).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]

# SLERP's guards (radians). Below PARALLEL_EPS the two task vectors are parallel and sin Ω -> 0:
# linear interpolation, the standard SLERP guard the spec names. Within ANTIPODAL_WARN of π they
# are nearly opposite and SLERP is ill-defined (a warning); within PARALLEL_EPS of π it falls back
# to linear interpolation too, as 1/sin Ω would blow up.
PARALLEL_EPS = 1e-4
ANTIPODAL_WARN = 1e-2

# Name fragments of the tensors whose rows are the vocabulary (rizzrun's Llama, RWKV, transformers).
VOCAB_TENSOR_MARKS = ("embed", "lm_head", "wte", "head.weight")


# --- checks -------------------------------------------------------------------------------------

def check_compatible(states: Mapping[str, StateDict]) -> None:
    """ValueError unless every state dict has the names and shapes of the first (the reference).
    `states`: {label: state dict}, the labels used in the message (e.g. "init", a path)."""
    items = list(states.items())
    if not items:
        raise ValueError("no state dicts to merge")
    ref_label, ref = items[0]
    for label, sd in items[1:]:
        missing = [n for n in ref if n not in sd]
        extra = [n for n in sd if n not in ref]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{label} lacks {_names(missing)} (present in {ref_label})")
            if extra:
                parts.append(f"{label} has {_names(extra)}, which {ref_label} lacks")
            raise ValueError("; ".join(parts) + "; every input must hold the same tensors (one architecture)")
        for name, tensor in ref.items():
            other = sd[name]
            if tuple(tensor.shape) == tuple(other.shape):
                continue
            a, b = tuple(tensor.shape), tuple(other.shape)
            if _is_vocab_tensor(name) and len(a) == len(b) and a[1:] == b[1:]:
                raise ValueError(
                    f"tensor {name}: {a[0]} rows in {ref_label} vs {b[0]} in {label}: a different vocabulary "
                    "(tokens added or removed); merging refuses it (new rows have no counterpart to subtract); "
                    "merge models that share one vocabulary")
            raise ValueError(f"tensor {name}: shape {_shape(a)} in {ref_label} vs {_shape(b)} in {label}; "
                             "every input must have the same shapes (one architecture)")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"tensor{'s' * (len(names) > 1)} {shown}{more}"


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _is_vocab_tensor(name: str) -> bool:
    return any(mark in name for mark in VOCAB_TENSOR_MARKS)


def _labelled(reference: str, sd: StateDict, others: Sequence[tuple[str, StateDict]]) -> None:
    check_compatible({reference: sd, **dict(others)})


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value:g}: out of range; allowed: 0 <= {name} <= 1")
    return value


def _check_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value}: not a finite number")
    return value


# --- the per-tensor map ---------------------------------------------------------------------------

def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype)


def _ties(sd: StateDict) -> dict[str, str]:
    """{name: the first earlier name sharing its storage} (tied weights)."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, t in sd.items():
        if t.device.type == "meta":
            continue
        key = _storage_key(t)
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


def _map(reference: StateDict, others: Sequence[StateDict],
         fn: Callable[[str, torch.Tensor, list[torch.Tensor]], torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: fn(name, reference fp32, [other fp32, ...]) cast to the reference's dtype} for floating
    tensors; non-floating ones copied from the reference. Names tied in every input reuse one result."""
    ties = [_ties(reference), *map(_ties, others)]
    out: dict[str, torch.Tensor] = {}
    for name, ref in reference.items():
        tied_to = ties[0].get(name)
        if tied_to is not None and all(t.get(name) == tied_to for t in ties[1:]):
            out[name] = out[tied_to]
            continue
        if not ref.is_floating_point():
            out[name] = ref.detach().clone()
            continue
        with torch.no_grad():
            result = fn(name, ref.detach().float(), [sd[name].detach().to(ref.device, torch.float32) for sd in others])
        out[name] = result.to(ref.dtype)
    return out


# --- WARP and friends -------------------------------------------------------------------------------

def task_vector(theta: StateDict, init: StateDict) -> dict[str, torch.Tensor]:
    """δ = θ − θ_init per tensor (WARP, arXiv:2406.16768), in init's dtypes; non-floating tensors
    are copied from init."""
    _labelled("init", init, [("theta", theta)])
    return _map(init, [theta], lambda name, i, ts: ts[0] - i)


def linear(init: StateDict, models: Sequence[StateDict],
           weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """θ_init + Σ_i w_i (θ_i − θ_init): linear merging of task vectors (weight averaging when the
    weights sum to 1; default w_i = 1/M)."""
    models = list(models)
    if not models:
        raise ValueError("linear: give at least one model besides init")
    if weights is None:
        weights = [1.0 / len(models)] * len(models)
    weights = [_check_finite(f"weights[{i}]", w) for i, w in enumerate(weights)]
    if len(weights) != len(models):
        raise ValueError(f"weights: {len(weights)} given for {len(models)} models; give one per model")
    _labelled("init", init, [(f"models[{i}]", m) for i, m in enumerate(models)])

    def fn(name, i, ts):
        out = i.clone()
        for w, t in zip(weights, ts):
            out += w * (t - i)
        return out

    return _map(init, models, fn)


def slerp_coefficients(d1: torch.Tensor, d2: torch.Tensor, lam: float, name: str = "tensor") -> tuple[float, float]:
    """(c1, c2) with SLERP(δ1, δ2, λ) = c1 δ1 + c2 δ2 (WARP stage 2, arXiv:2406.16768):

        Ω = angle(δ1, δ2),  c1 = sin((1−λ)Ω) / sin Ω,  c2 = sin(λΩ) / sin Ω

    Ω is computed as 2·atan2(‖u1 − u2‖, ‖u1 + u2‖) on the unit vectors, which stays accurate near
    0 and π in float32 (arccos of the cosine cannot resolve Ω < ~3e-4 there). Linear
    interpolation (1−λ, λ) when Ω < PARALLEL_EPS, when Ω is within PARALLEL_EPS of π, and when a
    task vector is zero (decision: the other's update scaled as on the linear path, λ δ2 or
    (1−λ) δ1; the spec's "skip that tensor" would drop the other run's update). Nearly opposite
    vectors (within ANTIPODAL_WARN of π) warn: SLERP is ill-defined there."""
    n1, n2 = float(torch.linalg.vector_norm(d1)), float(torch.linalg.vector_norm(d2))
    if n1 == 0.0 or n2 == 0.0 or not (math.isfinite(n1) and math.isfinite(n2)):
        return 1.0 - lam, lam
    u1, u2 = d1 / n1, d2 / n2
    omega = 2.0 * math.atan2(float(torch.linalg.vector_norm(u1 - u2)), float(torch.linalg.vector_norm(u1 + u2)))
    if math.pi - omega < ANTIPODAL_WARN:
        warnings.warn(f"slerp: {name}: the two task vectors are nearly opposite (angle {math.degrees(omega):.2f}°); "
                      "SLERP is ill-defined there" + (", used linear interpolation" if math.pi - omega < PARALLEL_EPS
                                                      else ""), RuntimeWarning, stacklevel=3)
    if omega < PARALLEL_EPS or math.pi - omega < PARALLEL_EPS:
        return 1.0 - lam, lam
    s = math.sin(omega)
    return math.sin((1.0 - lam) * omega) / s, math.sin(lam * omega) / s


def slerp(init: StateDict, theta_1: StateDict, theta_2: StateDict, lam: float = 0.5) -> dict[str, torch.Tensor]:
    """θ_init + c1·δ1 + c2·δ2 per tensor, δ_m = θ_m − θ_init, (c1, c2) from `slerp_coefficients`
    (WARP stage 2). λ = 0 gives θ_1, λ = 1 gives θ_2; λ in [0, 1]."""
    lam = _check_unit("lam", lam)
    _labelled("init", init, [("theta_1", theta_1), ("theta_2", theta_2)])

    def fn(name, i, ts):
        d1, d2 = ts[0] - i, ts[1] - i
        c1, c2 = slerp_coefficients(d1, d2, lam, name)
        return i + c1 * d1 + c2 * d2

    return _map(init, [theta_1, theta_2], fn)


def slerp_many(init: StateDict, thetas: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """SLERP of M >= 2 models, iteratively: θ^(1) = θ_1, θ^(m) = slerp(θ_init, θ^(m−1), θ_m, λ = 1/m).
    The λ = 1/m sequence (each model weighted equally, as running averaging would) is the spec's
    UNCONFIRMED reading of the paper's iterative extension. M = 2 is `slerp(..., lam=0.5)`.
    Intermediates are kept in float32; the result is cast to init's dtypes once."""
    thetas = list(thetas)
    if len(thetas) < 2:
        raise ValueError(f"slerp_many: {len(thetas)} model(s) given; SLERP needs at least 2")
    _labelled("init", init, [(f"thetas[{i}]", t) for i, t in enumerate(thetas)])

    def fn(name, i, ts):
        merged = ts[0]
        for m, t in enumerate(ts[1:], start=2):
            d1, d2 = merged - i, t - i
            c1, c2 = slerp_coefficients(d1, d2, 1.0 / m, name)
            merged = i + c1 * d1 + c2 * d2
        return merged

    return _map(init, thetas, fn)


def liti(init: StateDict, merged: StateDict, eta: float) -> dict[str, torch.Tensor]:
    """(1 − η)·θ_init + η·θ_merged: linear interpolation towards init (WARP stage 3); η = 0 gives
    init, η = 1 the merged model; η in [0, 1]."""
    eta = _check_unit("eta", eta)
    _labelled("init", init, [("merged", merged)])
    return _map(init, [merged], lambda name, i, ts: (1.0 - eta) * i + eta * ts[0])


def paramdelta(new_base: StateDict, pairs: Sequence[tuple[StateDict, StateDict, float]]) -> dict[str, torch.Tensor]:
    """Θ'_base + Σ_i α_i (Θ_post,i − Θ_base,i) (ParamΔ, arXiv:2504.21023): post-training carried to an
    updated base by weight arithmetic. `pairs`: (post, base, alpha) per post-trained delta."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("paramdelta: give at least one (post, base, alpha) pair")
    alphas = [_check_finite(f"alpha[{i}]", a) for i, (_, _, a) in enumerate(pairs)]
    others: list[tuple[str, StateDict]] = []
    for i, (post, base, _) in enumerate(pairs):
        others += [(f"post[{i}]", post), (f"base[{i}]", base)]
    _labelled("new_base", new_base, others)

    def fn(name, nb, ts):
        out = nb.clone()
        for a, post, base in zip(alphas, ts[0::2], ts[1::2]):
            out += a * (post - base)
        return out

    return _map(new_base, [sd for _, sd in others], fn)
