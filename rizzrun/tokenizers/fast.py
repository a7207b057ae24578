"""FAST: action chunks <-> token ids (Pertsch et al. 2025, arXiv 2501.09747).

Encode a chunk A (H timesteps x D action dims):
  1. quantile-normalise each dim: a -> 2(a - q01)/(q99 - q01 + 1e-6) - 1 (`QuantileNormalizer`,
     fitted on the training chunks; optional, as openpi does it outside the processor);
  2. C = DCT-II(A) along time, orthonormal (`dct`); row k of C is frequency k;
  3. Q = round(scale * C), scale (gamma) = 10 by default;
  4. flatten frequency-major: [Q[0, 0..D-1], Q[1, 0..D-1], ...] (`flatten_coefficients`);
  5. shift by the fitted minimum: z = Q - min_token, clamped to the fitted range [0, max - min];
     each z becomes the character chr(z);
  6. byte-level BPE (Hugging Face `tokenizers`, GPT-2 style byte-level pre-tokenizer and
     decoder) trained on those per-chunk strings: initial alphabet = every integer of the
     fitted range (in byte-level form, below), min_frequency 2, no special tokens, vocab_size
     1024 by default.
Decode inverts every step: ids -> string -> ord(c) + min_token -> (H, D) -> / scale ->
DCT-III (`idct`) -> de-normalise.

Round trip: the orthonormal DCT is an isometry, so for a chunk whose coefficients lie in the
fitted range, ||A - decode(encode(A))||_F <= ||C - Q/scale||_F <= sqrt(H*D) / (2*scale) in
normalised units (each rounding error is at most 1/(2 scale)); coefficients clamped into the
range add their clamp distance / scale.

Decisions where the reference (HF hub `physical-intelligence/fast`, not available offline) or
the paper leave it open, or where rizzrun differs on purpose:
- Malformed streams are counted, not zero-filled. The reference prints an error and returns an
  all-zero chunk when the decoded length is not H*D. Here `decode` returns None and counts the
  failure by reason in `FASTTokenizer.failures` (`length`: wrong number of coefficients;
  `unknown_id`: an id outside the trained vocabulary; `bad_char`: a decoded character outside the
  fitted alphabet, e.g. U+FFFD from invalid UTF-8 bytes). `on_failure="zeros"` gives the
  reference's zero chunk (still counted); `on_failure="raise"` raises ValueError;
  `on_failure="repair"` cuts or zero-pads a wrong-length stream to H*D coefficients (the
  missing tail is the highest frequencies, so this is a low-pass guess), still counted.
- The initial alphabet is the byte-level form of chr(0)..chr(max - min). The reference (as the
  spec describes it) passes the raw characters, but the byte-level pre-tokenizer never emits
  most of them (chr(0..32), chr(127..160), chr(173) and every 2-byte character become other
  symbols), so an integer unseen in training would be silently dropped by encode (no unknown
  token) and the stream would decode to the wrong length; found by the round-trip test. Here
  the alphabet holds the byte-level symbols of every character of the range, so no value of
  the range is ever dropped. Ids therefore differ from the reference's.
- Clamping is symmetric. The reference clamps only below (max(Q - min, 0)); values above the
  fitted maximum become characters outside the alphabet. Clamping above too keeps every stream
  inside the alphabet, so decode can reject any other character. Ids of in-range chunks are
  unchanged; `clamped` counts the clamped coefficients.
- No clipping in the normaliser by default (openpi does not clip; unconfirmed for the paper):
  values beyond the quantiles map outside [-1, 1] and reach the coefficient clamp only when
  extreme. `QuantileNormalizer(clip=True)` clips to [-1, 1] (and decode cannot undo it).
- Quantiles: `torch.quantile` (linear interpolation, as `numpy.quantile`) over every timestep
  of every training chunk, per dim.

Not a run tokenizer: rizzrun's tokenizer contract (docs/contracts.md) is text <-> ids with
bos/eos/pad, and `FASTTokenizer` maps float tensors to ids with no specials (as the reference).
Rather than bend that contract, a run splits FAST in two: the data option `data=actions`
(rizzrun.data.actions) owns the continuous half (`FASTQuantizer`: chunk <-> the string of
chr(z)), and the run's own text tokenizer does the BPE half on those strings (`tokenizer=bpe`,
trained on the training split as FAST's fit does). `FASTTokenizer` is the whole of it as one
plain component (repro/fast.py).

Shapes: a chunk is (H, D); `fit` takes chunks of different H (same D).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["FASTQuantizer", "FASTTokenizer", "QuantileNormalizer", "dct", "dct_matrix", "flatten_coefficients", "idct",
           "train_bpe", "unflatten_coefficients"]

CONFIG_FILE = "fast.json"
BPE_FILE = "tokenizer.json"
FORMAT_VERSION = 1
ON_FAILURE = ("none", "zeros", "raise", "repair")
# Characters are code points chr(z); above this the range would reach the UTF-16 surrogates,
# which have no UTF-8 encoding.
MAX_RANGE = 0xD7FF


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix M (n, n): M[k, t] = s_k cos(pi (2t + 1) k / (2n)),
    s_0 = sqrt(1/n), s_k = sqrt(2/n). M is orthogonal, so DCT-III (its inverse) is M^T."""
    if int(n) != n or n < 1:
        raise ValueError(f"dct_matrix: n={n!r} must be an integer >= 1")
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    t = torch.arange(n, dtype=torch.float64, device=device)[None, :]
    m = torch.cos(math.pi * (2 * t + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] = m[0] / math.sqrt(2.0)
    return m.to(dtype)


def dct(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Orthonormal DCT-II of `x` along `dim` (scipy.fft.dct(type=2, norm="ortho"))."""
    x = x.movedim(dim, -1)
    out = x @ dct_matrix(x.shape[-1], x.dtype, x.device).T
    return out.movedim(-1, dim)


def idct(c: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Orthonormal DCT-III along `dim`, the inverse of `dct` (scipy.fft.idct(type=2, norm="ortho"))."""
    c = c.movedim(dim, -1)
    out = c @ dct_matrix(c.shape[-1], c.dtype, c.device)
    return out.movedim(-1, dim)


def flatten_coefficients(q: torch.Tensor) -> torch.Tensor:
    """(H, D) coefficients -> (H*D,) frequency-major: all dims' frequency 0, then frequency 1, ..."""
    return q.reshape(-1)


def unflatten_coefficients(flat: torch.Tensor, horizon: int, dims: int) -> torch.Tensor:
    """Inverse of `flatten_coefficients`: (H*D,) -> (H, D)."""
    return flat.reshape(horizon, dims)


def _check_chunk(chunk, dims: int | None, where: str) -> torch.Tensor:
    a = torch.as_tensor(chunk)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{where}: a chunk must have shape (H, D) with H, D >= 1, got {tuple(a.shape)}")
    if dims is not None and a.shape[1] != dims:
        raise ValueError(f"{where}: chunk has D={a.shape[1]} action dims, the tokenizer was fitted on D={dims}")
    if a.is_complex() or a.dtype == torch.bool:
        raise ValueError(f"{where}: chunk dtype {a.dtype} is not a real number type")
    a = a.to(torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError(f"{where}: chunk holds NaN or inf values")
    return a


class QuantileNormalizer:
    """Per-dim quantile normalisation (openpi `Normalize(use_quantiles=True)`):
    a -> 2 (a - q01) / (q99 - q01 + eps) - 1, so q01 -> -1 and q99 -> ~+1.

    low, high: the quantile levels (0.01, 0.99). clip: clip normalised values to [-1, 1]
    (default False, as openpi). eps: 1e-6 as openpi.
    """

    def __init__(self, low: float = 0.01, high: float = 0.99, clip: bool = False, eps: float = 1e-6):
        if not 0 <= low < high <= 1:
            raise ValueError(f"QuantileNormalizer: need 0 <= low < high <= 1, got low={low}, high={high}")
        self.low, self.high, self.clip, self.eps = float(low), float(high), bool(clip), float(eps)
        self.q_low: torch.Tensor | None = None
        self.q_high: torch.Tensor | None = None

    def fit(self, chunks: Iterable) -> QuantileNormalizer:
        """Quantiles per dim over every timestep of every chunk ((H_i, D) each)."""
        rows = [_check_chunk(c, None, "QuantileNormalizer.fit") for c in chunks]
        if not rows:
            raise ValueError("QuantileNormalizer.fit: no chunks given")
        if len({r.shape[1] for r in rows}) > 1:
            raise ValueError(f"QuantileNormalizer.fit: chunks differ in D: {sorted({r.shape[1] for r in rows})}")
        x = torch.cat(rows)
        levels = torch.tensor([self.low, self.high], dtype=torch.float64)
        q = torch.quantile(x, levels, dim=0)
        self.q_low, self.q_high = q[0], q[1]
        return self

    def _ready(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.q_low is None:
            raise RuntimeError("QuantileNormalizer is not fitted: call fit(chunks) first")
        return self.q_low, self.q_high

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        lo, hi = self._ready()
        out = 2 * (a - lo) / (hi - lo + self.eps) - 1
        return out.clamp(-1, 1) if self.clip else out

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._ready()
        return (x + 1) / 2 * (hi - lo + self.eps) + lo

    def state(self) -> dict:
        lo, hi = self._ready()
        return {"low": self.low, "high": self.high, "clip": self.clip, "eps": self.eps,
                "q_low": lo.tolist(), "q_high": hi.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> QuantileNormalizer:
        n = cls(state["low"], state["high"], state["clip"], state["eps"])
        n.q_low = torch.tensor(state["q_low"], dtype=torch.float64)
        n.q_high = torch.tensor(state["q_high"], dtype=torch.float64)
        return n


def _bpe_tokenizer():
    """An untrained byte-level BPE, built as `tokenizers.ByteLevelBPETokenizer()` builds it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _byte_level_alphabet(span: int) -> list[str]:
    """The byte-level symbols of the UTF-8 bytes of chr(0)..chr(span): what the pre-tokenizer
    turns those characters into, so every integer of the range is in the vocabulary."""
    from tokenizers import pre_tokenizers

    symbols = pre_tokenizers.ByteLevel.alphabet()
    text = "".join(map(chr, range(span + 1)))
    seen = {sym for word, _ in pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            .pre_tokenize_str(text) for sym in word}
    return sorted(seen & set(symbols))


def train_bpe(strings: Iterable[str], vocab_size: int, min_frequency: int, span: int):
    """Byte-level BPE on FAST chunk strings (step 6): initial alphabet = every character of
    chr(0)..chr(span) in byte-level form, no special tokens. Returns a `tokenizers.Tokenizer`."""
    from tokenizers import trainers

    tok = _bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[],
        initial_alphabet=_byte_level_alphabet(span),
        max_token_length=10000,
        show_progress=False,
    )
    tok.train_from_iterator(strings, trainer=trainer)
    return tok


class FASTQuantizer:
    """FAST's continuous half: chunk (H, D) <-> string of chr(z), z the shifted, rounded,
    frequency-major DCT coefficients (steps 1-5 and their inverse; module docstring). The BPE
    half is any byte-level BPE over these strings: `FASTTokenizer`'s own, or a run's text
    tokenizer (`rizzrun.data.actions`).

    scale: gamma (10). max_range: `fit` refuses a coefficient range max - min above it (the
        BPE vocabulary size, as the reference asserts). normalize, clip: the quantile normaliser.

    Counters: `decoded` (decode calls), `failures` (Counter by reason), `clamped` (coefficients
    clamped into the fitted range by `to_text`). `failure_rate` = sum(failures) / decoded.
    """

    def __init__(self, scale: float = 10.0, max_range: int = 1024, normalize: bool = True, clip: bool = False):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"FASTQuantizer: scale={scale!r} must be a finite number > 0")
        if isinstance(max_range, bool) or int(max_range) != max_range or max_range < 1:
            raise ValueError(f"FASTQuantizer: max_range={max_range!r} must be an integer >= 1 (the vocab_size)")
        self.scale, self.max_range = float(scale), int(max_range)
        self.normalizer = QuantileNormalizer(clip=clip) if normalize else None
        self.dims: int | None = None
        self.min_token: int | None = None
        self.max_token: int | None = None
        self.reset_counters()

    def _ready(self) -> int:
        if self.dims is None:
            raise RuntimeError("FAST is not fitted: call fit(chunks), or load a saved one")
        return self.dims

    @property
    def span(self) -> int:
        """max_token - min_token: characters are chr(0)..chr(span)."""
        self._ready()
        return self.max_token - self.min_token

    # -- chunk <-> integers ------------------------------------------------------------------

    def _integers(self, a: torch.Tensor) -> torch.Tensor:
        x = self.normalizer.normalize(a) if self.normalizer is not None else a
        return flatten_coefficients(torch.round(dct(x, dim=0) * self.scale).to(torch.int64))

    def coefficients(self, chunk) -> torch.Tensor:
        """scale * DCT-II of the (normalised) chunk, not rounded: (H, D) float64."""
        a = _check_chunk(chunk, self._ready(), "FAST encode")
        x = self.normalizer.normalize(a) if self.normalizer is not None else a
        return dct(x, dim=0) * self.scale

    def to_integers(self, chunk) -> torch.Tensor:
        """round(scale * DCT(chunk)), frequency-major flattened: (H*D,) int64, before shift and clamp."""
        return self._integers(_check_chunk(chunk, self._ready(), "FAST encode"))

    def from_integers(self, q: torch.Tensor, horizon: int) -> torch.Tensor:
        """Inverse of `to_integers` (floats accepted): (H*D,) -> (H, D) float64 chunk, de-normalised."""
        c = unflatten_coefficients(q.to(torch.float64), horizon, self._ready()) / self.scale
        a = idct(c, dim=0)
        return self.normalizer.denormalize(a) if self.normalizer is not None else a

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, chunks: Sequence) -> list[str]:
        """Fit the normaliser (if any) and the coefficient range on `chunks` ((H_i, D) each, H_i
        may differ); returns their strings (what BPE trains on). ValueError when max - min >
        max_range."""
        chunks = [_check_chunk(c, None, "FAST fit") for c in chunks]
        if not chunks:
            raise ValueError("FAST fit: no chunks given")
        dims = {c.shape[1] for c in chunks}
        if len(dims) > 1:
            raise ValueError(f"FAST fit: chunks differ in D (action dims): {sorted(dims)}")
        self.dims = None
        if self.normalizer is not None:
            self.normalizer.fit(chunks)
        ints = [self._integers(c) for c in chunks]
        flat = torch.cat(ints)
        lo, hi = int(flat.min()), int(flat.max())
        if hi - lo > min(self.max_range, MAX_RANGE):
            raise ValueError(f"FAST fit: the rounded coefficients span {lo}..{hi} ({hi - lo} values apart), more "
                             f"than vocab_size={self.max_range}; raise vocab_size or lower scale={self.scale}")
        self.dims, self.min_token, self.max_token = dims.pop(), lo, hi
        return [self._chars(q) for q in ints]

    def _chars(self, q: torch.Tensor) -> str:
        return "".join(map(chr, (q - self.min_token).tolist()))

    # -- chunk <-> string ---------------------------------------------------------------------

    def to_text(self, chunk) -> str:
        """The string for `chunk`: chr(z) per shifted coefficient, clamped to the fitted range
        (counted in `clamped`)."""
        q = self.to_integers(chunk)
        clamped = q.clamp(self.min_token, self.max_token)
        self.clamped += int((clamped != q).sum())
        return self._chars(clamped)

    def from_text(self, text: str, horizon: int, on_failure: str = "none") -> torch.Tensor | None:
        """A decoded string -> (H, D) float64 chunk. A malformed string (a character outside
        chr(0)..chr(span), or not H*D characters) is counted in `failures` and gives None
        ("none"), the reference's zero chunk ("zeros"), a ValueError ("raise"), or, for a
        wrong length only, the chunk with the coefficient stream cut or zero-padded to H*D
        ("repair": frequency-major, so that drops or zeroes the highest frequencies; still
        counted as a failure, and None for a stream that has a bad character)."""
        dims = self._ready()
        if on_failure not in ON_FAILURE:
            raise ValueError(f"FAST decode: on_failure={on_failure!r}; valid: {', '.join(ON_FAILURE)}")
        if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
            raise ValueError(f"FAST decode: horizon={horizon!r} must be an integer >= 1")
        horizon = int(horizon)
        self.decoded += 1
        z = torch.tensor([ord(ch) for ch in text], dtype=torch.int64)
        if len(z) and (z.min() < 0 or z.max() > self.span):
            return self.fail("bad_char", f"a character outside chr(0)..chr({self.span})", horizon, on_failure)
        if len(z) != horizon * dims:
            out = self.fail("length", f"{len(z)} coefficients, expected H*D={horizon * dims}", horizon, on_failure)
            if on_failure != "repair":
                return out
            # Frequency-major: the missing (or extra) tail is the highest frequencies; zero them.
            z = torch.cat([z[: horizon * dims], torch.full((max(0, horizon * dims - len(z)),), -self.min_token)])
        return self.from_integers(z + self.min_token, horizon)

    def fail(self, reason: str, detail: str, horizon: int, on_failure: str) -> torch.Tensor | None:
        """Count a malformed stream and answer as `on_failure` says ("repair" of a stream that
        cannot be repaired gives None)."""
        self.failures[reason] += 1
        if on_failure == "raise":
            raise ValueError(f"FAST decode: malformed token stream ({reason}): {detail}")
        if on_failure == "zeros":
            return torch.zeros(horizon, self._ready(), dtype=torch.float64)
        return None

    @property
    def failure_rate(self) -> float:
        return sum(self.failures.values()) / self.decoded if self.decoded else 0.0

    def reset_counters(self) -> None:
        self.decoded, self.clamped = 0, 0
        self.failures: Counter = Counter()

    # -- persistence -------------------------------------------------------------------------

    def state(self) -> dict:
        self._ready()
        return {"format": FORMAT_VERSION, "scale": self.scale, "vocab_size": self.max_range,
                "min_token": self.min_token, "max_token": self.max_token, "dims": self.dims,
                "normalizer": self.normalizer.state() if self.normalizer is not None else None}

    @classmethod
    def from_state(cls, state: dict, source: str = "FAST state") -> FASTQuantizer:
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"{source}: format {state.get('format')!r}, this version reads {FORMAT_VERSION}")
        q = cls(state["scale"], state["vocab_size"], normalize=False)
        if state["normalizer"] is not None:
            q.normalizer = QuantileNormalizer.from_state(state["normalizer"])
        q.min_token, q.max_token, q.dims = state["min_token"], state["max_token"], state["dims"]
        return q


class FASTTokenizer:
    """FAST action tokenizer (module docstring): `fit` on training chunks, then
    `encode(chunk (H, D)) -> list[int]` and `decode(ids, H) -> (H, D) float64 tensor | None`.

    scale: gamma, the rounding scale (10). vocab_size: BPE vocabulary size (1024); `fit` refuses
        a coefficient range (max - min) above it, as the reference asserts. min_frequency: BPE
        merge threshold (2). normalize: fit a `QuantileNormalizer` and apply it inside
        encode/decode (True); False: chunks are taken as already normalised.
        clip: the normaliser's clip (False).

    Counters (kept by `quantizer`): `decoded`, `failures` (Counter by reason: unknown_id,
    bad_char, length), `clamped`, `failure_rate`.
    """

    def __init__(self, scale: float = 10.0, vocab_size: int = 1024, min_frequency: int = 2, normalize: bool = True,
                 clip: bool = False):
        if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 1:
            raise ValueError(f"FASTTokenizer: vocab_size={vocab_size!r} must be an integer >= 1")
        if isinstance(min_frequency, bool) or int(min_frequency) != min_frequency or min_frequency < 1:
            raise ValueError(f"FASTTokenizer: min_frequency={min_frequency!r} must be an integer >= 1")
        self.quantizer = FASTQuantizer(scale, int(vocab_size), normalize, clip)
        self.vocab_size, self.min_frequency = int(vocab_size), int(min_frequency)
        self._bpe = None

    # The quantizer's settings and counters, read through the tokenizer.
    scale = property(lambda self: self.quantizer.scale)
    dims = property(lambda self: self.quantizer.dims)
    min_token = property(lambda self: self.quantizer.min_token)
    max_token = property(lambda self: self.quantizer.max_token)
    normalizer = property(lambda self: self.quantizer.normalizer)
    decoded = property(lambda self: self.quantizer.decoded)
    failures = property(lambda self: self.quantizer.failures)
    clamped = property(lambda self: self.quantizer.clamped)
    failure_rate = property(lambda self: self.quantizer.failure_rate)

    def reset_counters(self) -> None:
        self.quantizer.reset_counters()

    def coefficients(self, chunk) -> torch.Tensor:
        return self.quantizer.coefficients(chunk)

    def to_integers(self, chunk) -> torch.Tensor:
        return self.quantizer.to_integers(chunk)

    def from_integers(self, q: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.quantizer.from_integers(q, horizon)

    def chunk_string(self, chunk) -> str:
        """The string BPE sees for `chunk` (`FASTQuantizer.to_text`)."""
        return self.quantizer.to_text(chunk)

    def _ready(self):
        if self._bpe is None:
            raise RuntimeError("FASTTokenizer is not fitted: call fit(chunks) or FASTTokenizer.load(directory)")
        return self._bpe

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, chunks: Sequence) -> FASTTokenizer:
        """Fit the normaliser (if any), the coefficient range and the BPE on `chunks`
        ((H_i, D) each, H_i may differ). ValueError when max - min > vocab_size."""
        self._bpe = None
        strings = self.quantizer.fit(chunks)
        self._bpe = train_bpe(strings, self.vocab_size, self.min_frequency, self.quantizer.span)
        return self

    # -- the tokenizer interface -------------------------------------------------------------

    @property
    def trained_vocab_size(self) -> int:
        """Ids the trained BPE has (ids are 0..this-1; can exceed vocab_size by the alphabet)."""
        return self._ready().get_vocab_size()

    def encode(self, chunk) -> list[int]:
        """(H, D) chunk -> token ids (variable length)."""
        bpe = self._ready()
        return bpe.encode(self.quantizer.to_text(chunk), add_special_tokens=False).ids

    def encode_batch(self, chunks: Iterable) -> list[list[int]]:
        bpe = self._ready()
        strings = [self.quantizer.to_text(c) for c in chunks]
        return [e.ids for e in bpe.encode_batch(strings, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], horizon: int, dims: int | None = None,
               on_failure: str = "none") -> torch.Tensor | None:
        """Token ids -> (H, D) float64 chunk. A malformed stream (an id outside the trained
        vocabulary, a character outside the alphabet, or not H*D coefficients) is counted in
        `failures` and gives None (`on_failure="none"`), the reference's zero chunk ("zeros"),
        a ValueError ("raise") or, for a wrong length, the cut or zero-padded stream
        ("repair", `FASTQuantizer.from_text`)."""
        bpe = self._ready()
        if dims is not None and dims != self.dims:
            raise ValueError(f"FASTTokenizer.decode: dims={dims} but the tokenizer was fitted on D={self.dims}")
        ids = [int(i) for i in ids]
        n = bpe.get_vocab_size()
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            if on_failure not in ON_FAILURE:  # the same check from_text makes, before counting
                raise ValueError(f"FAST decode: on_failure={on_failure!r}; valid: {', '.join(ON_FAILURE)}")
            self.quantizer.decoded += 1
            return self.quantizer.fail("unknown_id", f"id {bad[0]} is not in the vocabulary 0..{n - 1}",
                                       int(horizon), on_failure)
        return self.quantizer.from_text(bpe.decode(ids, skip_special_tokens=False), horizon, on_failure)

    def decode_batch(self, sequences: Iterable[Iterable[int]], horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode many streams: ((B, H, D) chunks with zeros where malformed, (B,) bool ok).
        Every failure is counted in `failures`."""
        chunks, ok = [], []
        for ids in sequences:
            a = self.decode(ids, horizon)
            ok.append(a is not None)
            chunks.append(a if a is not None else torch.zeros(horizon, self.dims, dtype=torch.float64))
        return torch.stack(chunks), torch.tensor(ok, dtype=torch.bool)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json (the BPE, readable by `tokenizers.Tokenizer.from_file`) and
        fast.json (scale, min/max token, dims, vocab settings, quantiles)."""
        from rizzrun.files import write_atomic

        bpe = self._ready()
        directory = Path(directory)
        write_atomic(directory / BPE_FILE, bpe.to_str())
        config = {**self.quantizer.state(), "min_frequency": self.min_frequency}
        write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FASTTokenizer:
        from tokenizers import Tokenizer

        directory = Path(directory)
        for name in (CONFIG_FILE, BPE_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: FASTTokenizer.save writes {CONFIG_FILE} "
                                        f"and {BPE_FILE}")
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        tok = cls(config["scale"], config["vocab_size"], config["min_frequency"], normalize=False)
        tok.quantizer = FASTQuantizer.from_state(config, source=str(directory / CONFIG_FILE))
        tok._bpe = Tokenizer.from_file(str(directory / BPE_FILE))
        return tok

    def __repr__(self) -> str:
        state = (f"dims={self.dims}, range={self.min_token}..{self.max_token}" if self._bpe is not None
                 else "unfitted")
        return f"FASTTokenizer(scale={self.scale}, vocab_size={self.vocab_size}, {state})"
