"""RWKV-4: a recurrent language model trained in parallel (Peng et al., arXiv 2305.13048).

Embedding -> LayerNorm ln0 -> n_layer x [x += TimeMix(LN(x)); x += ChannelMix(LN(x))] -> LN -> head.
Both mixers first mix each token with the previous one per channel ("token shift",
x'_t = mu * x_t + (1 - mu) * x_{t-1}, x_{-1} = 0). TimeMix: r, k, v projections and the WKV
operator (`rizzrun.kernels.wkv`, decay w = exp(time_decay) > 0, bonus u = time_first), output
W_o(sigmoid(r) * wkv). ChannelMix: sigmoid(W'_r x') * W'_v(relu(W'_k x')^2). No biases.

Training runs the parallel (chunked) form; `step` runs the same layers on a carried state, one
token or a prompt at a time. The state of a layer is 5 vectors of C numbers: the last token-shift
input of each mixer and the WKV sums (a, b, p). Left padding (key_padding_mask False) never
enters it: padded inputs are zeroed before the token shift and their keys set to NEG_INF, so
the real tokens see exactly the unpadded prompt.

Shapes: B batch, T time, C = d_model, F = d_ff (4C), V vocab, L = n_layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.attention.mixer import repeat_rows
from rizzrun.kernels.wkv import IMPLS, NEG_INF, wkv, wkv_step
from rizzrun.models.rwkv_sizes import RWKV_INITS, resolve_rwkv_dims


@dataclass(frozen=True)
class RWKVConfig:
    """Resolved RWKV dimensions; `RWKV(**dataclasses.asdict(config))` rebuilds the same shape."""

    vocab_size: int
    d_model: int
    n_layer: int
    d_ff: int
    max_seq_len: int
    init: str = "code"
    norm_eps: float = 1e-5
    wkv_impl: str = "auto"

    def __post_init__(self):
        errors = []
        if not (isinstance(self.vocab_size, int) and not isinstance(self.vocab_size, bool) and self.vocab_size > 0):
            errors.append(f"vocab_size={self.vocab_size!r} must be a positive integer")
        if self.init not in RWKV_INITS:
            errors.append(f"init={self.init!r} is not an RWKV init; allowed: {', '.join(RWKV_INITS)}")
        if self.wkv_impl not in IMPLS:
            errors.append(f"wkv_impl={self.wkv_impl!r} is not a WKV implementation; allowed: {', '.join(IMPLS)}")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            errors.append(f"norm_eps={self.norm_eps!r} must be a positive number")
        if errors:
            raise ValueError("invalid RWKV config:\n  " + "\n  ".join(errors))


def token_shift(x, prev):
    """x (B, T, C) -> the previous token's x (B, T, C): prev (B, C) at t = 0, then x_{t-1}."""
    return torch.cat([prev[:, None].to(x.dtype), x[:, :-1]], dim=1)


def mix(x, shifted, mu):
    """Token shift with per-channel weight mu (C,): mu * x_t + (1 - mu) * x_{t-1}; mu = 1 keeps x."""
    return x * mu + shifted * (1 - mu)


class TimeMix(nn.Module):
    """RWKV-4 time mixing (arXiv 2305.13048 sec. 3.2): x (B, T, C) -> (B, T, C), with the new state."""

    def __init__(self, d_model: int, wkv_impl: str = "auto"):
        super().__init__()
        self.wkv_impl = wkv_impl
        self.time_mix_k = nn.Parameter(torch.empty(d_model))
        self.time_mix_v = nn.Parameter(torch.empty(d_model))
        self.time_mix_r = nn.Parameter(torch.empty(d_model))
        self.time_decay = nn.Parameter(torch.empty(d_model))  # w = exp(time_decay)
        self.time_first = nn.Parameter(torch.empty(d_model))  # u
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, prev, state=None, mask=None):
        """x (B, T, C) (zero on padding); prev (B, C) the last input before x; state (a, b, p) or None;
        mask (B, T) bool or None -> (out (B, T, C), x[:, -1], new state)."""
        shifted = token_shift(x, prev)
        k = self.key(mix(x, shifted, self.time_mix_k))
        v = self.value(mix(x, shifted, self.time_mix_v))
        r = self.receptance(mix(x, shifted, self.time_mix_r))
        ct = torch.promote_types(k.dtype, torch.float32)  # WKV sums in float32 (float64 stays)
        w = self.time_decay.to(ct).exp()
        u = self.time_first.to(ct)
        k = k.to(ct)
        if mask is not None:
            k = k.masked_fill(~mask[..., None], NEG_INF)
        if x.shape[1] == 1 and state is not None:
            y, state = wkv_step(w, u, k[:, 0], v[:, 0], state)
            y = y[:, None]
        else:
            y, state = wkv(w, u, k, v, state=state, output_final_state=True, impl=self.wkv_impl)
        return self.output(torch.sigmoid(r) * y.to(r.dtype)), x[:, -1], state


class ChannelMix(nn.Module):
    """RWKV-4 channel mixing (sec. 3.3): sigmoid(W'_r x') * W'_v(relu(W'_k x')^2); (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.empty(d_model))
        self.time_mix_r = nn.Parameter(torch.empty(d_model))
        self.key = nn.Linear(d_model, d_ff, bias=False)
        self.value = nn.Linear(d_ff, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, prev):
        shifted = token_shift(x, prev)
        k = torch.square(F.relu(self.key(mix(x, shifted, self.time_mix_k))))
        r = torch.sigmoid(self.receptance(mix(x, shifted, self.time_mix_r)))
        return r * self.value(k), x[:, -1]


class Block(nn.Module):
    """Pre-LN residual block: x + TimeMix(LN(x)), then + ChannelMix(LN(x)); (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: RWKVConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.att = TimeMix(cfg.d_model, cfg.wkv_impl)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = ChannelMix(cfg.d_model, cfg.d_ff)

    def forward(self, x, state, mask=None):
        """state = (att_x, ffn_x, a, b, p), each (B, C); mask (B, T) bool or None -> (x, new state)."""
        att_x, ffn_x, a, b, p = state
        pad = None if mask is None else ~mask[..., None]
        h = self.ln1(x)
        if pad is not None:
            h = h.masked_fill(pad, 0.0)  # padded tokens are x_{t-1} = 0 for the first real token, as with no padding
        out, att_x, wkv_state = self.att(h, att_x, (a, b, p), mask)
        x = x + out
        h = self.ln2(x)
        if pad is not None:
            h = h.masked_fill(pad, 0.0)
        out, ffn_x = self.ffn(h, ffn_x)
        return x + out, (att_x, ffn_x, *wkv_state)


class RWKVState:
    """The recurrent state for `RWKV.step`, one slot per layer, updated in place.

    att_x, ffn_x: (n_layer, B, C) in the activation dtype (the last token-shift inputs);
    a, b, p: (n_layer, B, C) float32, float64 for a float64 model (the WKV sums a e^p, b e^p). pos: tokens consumed so far;
    max_len: how many the decoder may feed (the state itself is the same size at any length).
    """

    def __init__(self, n_layer, batch_size, d_model, max_len, device=None, dtype=None):
        shape = (n_layer, batch_size, d_model)
        self.att_x = torch.zeros(shape, device=device, dtype=dtype)
        self.ffn_x = torch.zeros(shape, device=device, dtype=dtype)
        sums = torch.promote_types(dtype or torch.get_default_dtype(), torch.float32)
        self.a = torch.zeros(shape, device=device, dtype=sums)
        self.b = torch.zeros(shape, device=device, dtype=sums)
        self.p = torch.full(shape, NEG_INF, device=device, dtype=sums)
        self.max_len = max_len
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.a.shape[1]

    def reset(self) -> None:
        """Empty the state for a new batch of prompts, keeping its memory."""
        self.pos = 0
        for t in (self.att_x, self.ffn_x, self.a, self.b):
            t.zero_()
        self.p.fill_(NEG_INF)

    def nbytes(self) -> int:
        """Bytes of the state: 5 x (n_layer, B, C), whatever the context length."""
        return sum(t.nbytes for t in (self.att_x, self.ffn_x, self.a, self.b, self.p))

    def repeat_interleave(self, repeats: int) -> "RWKVState":
        """A new state of B * repeats rows, row b * repeats + g a copy of row b (`pos` kept): a
        prompt read once, continued `repeats` times (`rizzrun.decoders.loop.decode_loop`)."""
        return repeat_rows(self, repeats, dim=1)

    def layer(self, i: int):
        return self.att_x[i], self.ffn_x[i], self.a[i], self.b[i], self.p[i]

    def store(self, i: int, state) -> None:
        for dst, src in zip((self.att_x[i], self.ffn_x[i], self.a[i], self.b[i], self.p[i]), state):
            dst.copy_(src)


class RWKV(nn.Module):
    """RWKV-4 language model: input_ids (B, T) -> logits (B, T, V).

    `size` picks a preset from `rizzrun.models.rwkv_sizes.RWKV_SIZES`; a dimension given (not
    None) overrides it; d_ff None = 4 * d_model. `init`: "code" (the official RWKV-4 code's
    scheme, the default) or "paper" (App. E where it differs; see `reset_parameters`).
    `wkv_impl`: the WKV form for sequences (`rizzrun.kernels.wkv.wkv`; "auto" = Triton on CUDA,
    chunked PyTorch elsewhere). The model takes no attention kernel: it has no attention.

    Builds on the meta device (no buffers); after `to_empty(device=...)` call `reset_parameters()`.
    """

    def __init__(self, vocab_size: int, size: str = "tiny", d_model=None, n_layer=None, d_ff=None,
                 max_seq_len=None, init: str = "code", norm_eps: float = 1e-5, wkv_impl: str = "auto"):
        super().__init__()
        dims = resolve_rwkv_dims(size, d_model=d_model, n_layer=n_layer, d_ff=d_ff, max_seq_len=max_seq_len)
        self.config = cfg = RWKVConfig(vocab_size=vocab_size, **dims, init=init, norm_eps=norm_eps,
                                       wkv_impl=wkv_impl)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.ln0 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Init of sec. 5 of the spec (layer l < L, channel i < C, x = i / C):
        time mu_k = x^(1 - l/L), mu_v = mu_k + 0.3 l/(L-1), mu_r = x^((1 - l/L)/2) ("code") or
        x^(1 - l/L)/2 ("paper"); channel mu'_k = mu'_r = x^(1 - l/L);
        time_decay = -5 + 8 (i/(C-1))^(0.7 + 1.3 l/(L-1)); time_first = log 0.3 + 0.5 (((i+1) mod 3) - 1).
        l/(L-1) is taken as 0 when L = 1, i/(C-1) as 0 when C = 1 (the formulas divide by zero).
        "code" (official RWKV-4 `RWKV_Init`): orthogonal matrices with gain sqrt(rows/cols) when
        rows > cols (else 1): embedding gain 1e-4 sqrt(max(V, C)), head 0.5 x rule, time W_v,
        channel W'_k; zero: time W_k, W_r, W_o, channel W'_r, W'_v. "paper" (App. E; unconfirmed
        which one trained the checkpoints): embedding U(-1e-4, 1e-4), W_o and W'_v N(0, 2/sqrt(fan_in))
        (the paper prints the std as "sqrt(d/s) = 2"; read as gain 2 over a unit-variance init),
        the rest as "code" (the paper's literal zero W'_k would leave relu^2 with no gradient).
        LayerNorms: weight 1, bias 0.
        """
        if self.embed.weight.is_meta:
            return  # nothing to fill yet: `to_empty` then `reset_parameters` builds it
        cfg = self.config
        L, C, V = cfg.n_layer, cfg.d_model, cfg.vocab_size
        for name, value in rwkv_init_vectors(L, C, cfg.init).items():
            for block, row in zip(self.blocks, value):
                owner, attr = name.split(".")
                getattr(getattr(block, owner), attr).copy_(row)
        for ln in (self.ln0, self.ln_out, *(m for b in self.blocks for m in (b.ln1, b.ln2))):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)
        if cfg.init == "paper":
            nn.init.uniform_(self.embed.weight, -1e-4, 1e-4)
        else:
            nn.init.orthogonal_(self.embed.weight, gain=1e-4 * math.sqrt(max(V, C)))
        _orthogonal(self.head.weight, 0.5)
        for block in self.blocks:
            att, ffn = block.att, block.ffn
            for linear in (att.key, att.receptance, ffn.receptance):
                nn.init.zeros_(linear.weight)
            _orthogonal(att.value.weight)
            _orthogonal(ffn.key.weight)
            for linear in (att.output, ffn.value):
                if cfg.init == "paper":
                    nn.init.normal_(linear.weight, std=2 / math.sqrt(linear.weight.shape[1]))
                else:
                    nn.init.zeros_(linear.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids, key_padding_mask=None):
        """input_ids (B, T) long -> logits (B, T, V); key_padding_mask (B, T) bool, True = real
        token, False = left padding (kept out of every state). Any T: the model is an RNN."""
        return self.head(self.hidden_states(input_ids, key_padding_mask))

    def hidden_states(self, input_ids, key_padding_mask=None):
        """input_ids (B, T) long -> the final-norm hidden states (B, T, d_model) the output layer reads."""
        self._check_ids(input_ids)
        cache = self.init_cache(input_ids.shape[0], max_len=input_ids.shape[1], dtype=self._act_dtype())
        return self._run(input_ids, cache, key_padding_mask, keep_state=False, head=False)

    def init_cache(self, batch_size: int, max_len=None, device=None, dtype=None, **state_options) -> RWKVState:
        """An empty state for `step`; max_len (default max_seq_len) bounds the tokens fed; device
        and dtype default to the embedding's (pass the activation dtype under autocast). RWKV's
        state is fixed-size: it takes no state_options (a decoder's request for a key cache)."""
        if state_options:
            raise ValueError(f"RWKV keeps a fixed-size recurrent state, not a key/value cache: it does not take the "
                             f"decoding state option(s) {', '.join(sorted(state_options))}")
        max_len = self.config.max_seq_len if max_len is None else max_len
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if not (isinstance(max_len, int) and max_len > 0):
            raise ValueError(f"max_len={max_len!r} must be a positive integer")
        weight = self.embed.weight
        return RWKVState(self.config.n_layer, batch_size, self.config.d_model, max_len,
                         device=weight.device if device is None else device,
                         dtype=weight.dtype if dtype is None else dtype)

    def step(self, input_ids, cache: RWKVState, key_padding_mask=None, return_hidden: bool = False):
        """Feed input_ids (B, Tnew) after the cache.pos tokens the state holds; returns their logits
        (B, Tnew, V), or (logits, hidden) with the final-norm hidden states (B, Tnew, C) when
        return_hidden. Prefill (a prompt, key_padding_mask (B, Tnew) marking left padding) and
        decoding (Tnew = 1) alike; the state is updated in place (use under torch.no_grad)."""
        T = self._check_ids(input_ids)
        if input_ids.shape[0] != cache.batch_size:
            raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but the cache was made "
                             f"for batch_size={cache.batch_size}")
        if cache.pos + T > cache.max_len:
            raise ValueError(f"state overflow: {cache.pos} tokens fed + Tnew={T} > max_len={cache.max_len}; "
                             f"allowed Tnew <= {cache.max_len - cache.pos} (init_cache with a larger max_len)")
        if return_hidden:
            hidden = self._run(input_ids, cache, key_padding_mask, keep_state=True, head=False)
            cache.pos += T
            return self.head(hidden), hidden
        logits = self._run(input_ids, cache, key_padding_mask, keep_state=True)
        cache.pos += T
        return logits

    def _run(self, input_ids, cache, key_padding_mask, keep_state, head=True):
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask.to(device=input_ids.device, dtype=torch.bool)
            if bool(mask.all()):
                mask = None
        x = self.ln0(self.embed(input_ids))
        for i, block in enumerate(self.blocks):
            x, state = block(x, cache.layer(i), mask)
            if keep_state:
                cache.store(i, state)
        x = self.ln_out(x)
        return self.head(x) if head else x

    def _act_dtype(self):
        if torch.is_autocast_enabled(self.embed.weight.device.type):
            return torch.get_autocast_dtype(self.embed.weight.device.type)
        return self.embed.weight.dtype

    @staticmethod
    def _check_ids(input_ids) -> int:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected (B, T)")
        return input_ids.shape[1]


def rwkv_init_vectors(n_layer: int, d_model: int, init: str = "code") -> dict[str, torch.Tensor]:
    """The per-channel init of every layer (spec sec. 5), each (n_layer, d_model) float32, keyed
    "att.time_mix_k" ... "ffn.time_mix_r"; see `RWKV.reset_parameters`."""
    L, C = n_layer, d_model
    layer = torch.arange(L, dtype=torch.float64)[:, None]
    i = torch.arange(C, dtype=torch.float64)[None, :]
    ratio_0_to_1 = layer / (L - 1) if L > 1 else torch.zeros_like(layer)
    ratio_1_to_0 = 1 - layer / L
    x = i / C
    mu = x ** ratio_1_to_0
    out = {
        "att.time_mix_k": mu,
        "att.time_mix_v": mu + 0.3 * ratio_0_to_1,
        "att.time_mix_r": x ** (0.5 * ratio_1_to_0) if init == "code" else 0.5 * mu,
        "att.time_decay": -5 + 8 * ((i / (C - 1)) if C > 1 else torch.zeros_like(i)) ** (0.7 + 1.3 * ratio_0_to_1),
        "att.time_first": (math.log(0.3) + 0.5 * (((i + 1) % 3) - 1)).expand(L, C),
        "ffn.time_mix_k": mu,
        "ffn.time_mix_r": mu,
    }
    return {k: v.float() for k, v in out.items()}


def _orthogonal(weight, scale: float = 1.0) -> None:
    """Orthogonal init with gain scale * sqrt(rows / cols) when rows > cols, else scale (RWKV-4 code)."""
    rows, cols = weight.shape
    nn.init.orthogonal_(weight, gain=scale * (math.sqrt(rows / cols) if rows > cols else 1.0))
