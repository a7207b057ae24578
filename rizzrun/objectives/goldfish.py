"""Goldfish loss: next-token cross-entropy with a pseudo-random ~1/k of the targets left out.

Hans et al., "Be like a Goldfish, Don't Memorize! Mitigating Memorization in Generative LLMs",
NeurIPS 2024, arXiv:2406.10209. Spec: ../shared/methods/objectives/goldfish.md.

The forward pass is unchanged (every token is still visible as context); a drop mask G over the
*shifted* targets removes a fraction of them from the loss, so the model never gets a gradient
for them and cannot reproduce long training passages verbatim:

    L_goldfish = -(1/|G|) * sum_i G_i * log p(x_i | x_<i),   |G| = number of kept targets

The hashed mask (the paper's method) decides each target from the ids of a local window of
targets only, so a duplicated passage is masked the same way wherever it appears. It follows
the official implementation (lit-gpt fork, `apply_goldfish`, strategy `hash-table`) bit for bit
on the CPU table: int64 product of the window with two's-complement wrap-around, floor modulo
`table_size`, drop iff `table[key] < 1/k` (torch compares the float32 table with 1/k in float32).
"""

from __future__ import annotations

import logging
import numbers
from typing import Literal

import torch
import torch.nn.functional as F

from rizzrun.objectives.ce import CrossEntropy, lm_logits

__all__ = ["Goldfish", "goldfish_mask", "goldfish_keys", "goldfish_table", "STRATEGIES",
           "TABLE_SIZE", "TABLE_SEED"]

log = logging.getLogger(__name__)

STRATEGIES = ("static", "random", "hash")
TABLE_SIZE = 1_000_003  # prime
TABLE_SEED = 2971215073  # fib(47), prime
_MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed accepts (non-negative side)

_CPU_TABLES: dict[tuple[int, int], torch.Tensor] = {}
_DEVICE_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


# --- argument checks ------------------------------------------------------------------------

def _int_arg(name: str, value, low: int, high: int | None = None) -> int:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok:
        ok = value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is not allowed: it must be {allowed}")
    return int(value)


def _check_strategy(strategy) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not allowed: allowed are "
                         + ", ".join(repr(s) for s in STRATEGIES))
    return strategy


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: it must be true or false")
    return value


# --- the hash table and keys ----------------------------------------------------------------

def goldfish_table(table_size: int = TABLE_SIZE, table_seed: int = TABLE_SEED,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The (table_size,) float32 table of uniform [0, 1) values, `torch.rand` from a CPU
    `torch.Generator` seeded with `table_seed`.

    Always drawn on the CPU (Mersenne Twister) so every device sees the same table; the CUDA/ROCm
    generator (Philox) would give different values for the same seed. Cached per
    (table_size, table_seed) in this process, and per device for the moved copies. Do not
    modify the returned tensor in place.
    """
    table_size = _int_arg("table_size", table_size, 1)
    table_seed = _int_arg("table_seed", table_seed, 0, _MAX_SEED)
    key = (table_size, table_seed)
    table = _CPU_TABLES.get(key)
    if table is None:
        g = torch.Generator(device="cpu").manual_seed(table_seed)
        table = torch.rand(table_size, generator=g, dtype=torch.float32)
        _CPU_TABLES[key] = table
    if device is None or torch.device(device).type == "cpu":
        return table
    device = torch.device(device)
    dkey = (table_size, table_seed, str(device))
    moved = _DEVICE_TABLES.get(dkey)
    if moved is None:
        moved = _DEVICE_TABLES[dkey] = table.to(device)
    return moved


def goldfish_keys(targets: torch.Tensor, context_width: int = 13, table_size: int = TABLE_SIZE) -> torch.Tensor:
    """Table index of every window of `context_width` consecutive ids along the last dim.

    targets: (..., T) integer tensor. Returns (..., T - context_width + 1) int64, entry j being
    `prod(targets[..., j : j + w]) mod table_size`: the product in int64 wrapping modulo 2^64
    (two's complement, as the official code's `unfold(...).prod(-1)`), then floor modulo, so the
    key is in [0, table_size) even when the wrapped product is negative. Exact-integer (Python
    big int) arithmetic gives different keys once the product passes 2^63.
    Requires T >= context_width.
    """
    context_width = _int_arg("context_width", context_width, 1)
    table_size = _int_arg("table_size", table_size, 1)
    if targets.shape[-1] < context_width:
        raise ValueError(f"goldfish_keys: rows of length {targets.shape[-1]} are shorter than "
                         f"context_width={context_width}")
    windows = targets.long().unfold(-1, context_width, 1)  # (..., T-w+1, w), a view
    return torch.remainder(windows.prod(-1), table_size)


# --- the mask -------------------------------------------------------------------------------

def goldfish_mask(
    targets: torch.Tensor,
    k: int = 4,
    strategy: Literal["static", "random", "hash"] = "hash",
    context_width: int = 13,
    table_size: int = TABLE_SIZE,
    table_seed: int = TABLE_SEED,
    start_position: int = 0,
    include_target_in_hash: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep-mask of the goldfish loss: True = the target stays in the loss, False = dropped.

    targets: (..., T) integer tensor of *shifted* targets (labels), usually (B, T); position t
      is the token predicted at position t. Returns a bool tensor of the same shape on the same
      device. The decision ignores `ignore_index`: ignored positions get a decision like any
      other and their label value takes part in the hash of its neighbours' windows (as padding
      does in the official code); the caller ANDs the result with `labels != ignore_index`.

    strategy:
      "static": drop positions start_position, start_position + k, ... of every row (0-indexed;
        with the default 0 the very first target is dropped). Position-dependent.
      "random": drop each target i.i.d. with probability 1/k: `torch.rand` on the CPU from
        `generator` (a CPU torch.Generator; None = torch's global CPU generator) `< 1/k`, moved
        to the targets' device, so a seeded generator gives the same masks on every device.
      "hash" (default, the paper's method): with w = context_width, the target at position s is
        dropped iff `table[prod(window) mod table_size] < 1/k`, where window =
        targets[s-w+1 .. s] (include_target_in_hash=True, the official code: the target itself
        and its w-1 predecessors) or targets[s-w .. s-1] (False: the w preceding targets, as the
        paper's text says). The first w-1 (True) or w (False) positions of each row have no
        full window and are never dropped; a row too short for any window drops nothing.
        table = goldfish_table(table_size, table_seed) (CPU-built, cached, moved to the device).

    k >= 2 (the paper uses 3 and 4, also 8, 32, 128); `table_values < 1/k` is evaluated by torch
    in float32 (the Python scalar takes the table's dtype). context_width >= 1 (paper 13).
    """
    k = _int_arg("k", k, 2)
    strategy = _check_strategy(strategy)
    context_width = _int_arg("context_width", context_width, 1)
    table_size = _int_arg("table_size", table_size, 1)
    table_seed = _int_arg("table_seed", table_seed, 0, _MAX_SEED)
    start_position = _int_arg("start_position", start_position, 0)
    include_target_in_hash = _check_bool("include_target_in_hash", include_target_in_hash)
    if not isinstance(targets, torch.Tensor) or targets.ndim < 1:
        raise ValueError(f"targets must be a tensor of shape (..., T), got {type(targets).__name__} "
                         f"of shape {tuple(getattr(targets, 'shape', ()))}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets of dtype {targets.dtype} are not allowed: they must be integer token ids")
    keep = torch.ones(targets.shape, dtype=torch.bool, device=targets.device)
    if strategy == "static":
        keep[..., start_position::k] = False
        return keep
    if strategy == "random":
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator on {generator.device} is not allowed: it must be a CPU "
                             "torch.Generator (masks must not depend on the device)")
        draws = torch.rand(targets.shape, generator=generator, device="cpu")
        return (draws >= 1.0 / k).to(targets.device)
    # hash
    first = context_width - 1 if include_target_in_hash else context_width
    length = targets.shape[-1]
    if length <= first:
        return keep  # no position has a full window: nothing is dropped
    table = goldfish_table(table_size, table_seed, device=targets.device)
    keys = goldfish_keys(targets, context_width, table_size)  # (..., T-w+1)
    if not include_target_in_hash:
        keys = keys[..., :-1]  # window j decides position j+w; the last window decides nothing
    drop = table[keys] < 1.0 / k
    keep[..., first:] = ~drop
    return keep


# --- the objective --------------------------------------------------------------------------

class Goldfish:
    """Goldfish loss (arXiv:2406.10209): cross-entropy with ~1/k of the targets left out.

    Token-level mean cross-entropy over the targets kept by the goldfish mask; validation
    (`evaluate`) is plain cross-entropy without the mask.

    loss, metrics = Goldfish(k=4, strategy="hash", context_width=13)(model, batch)
      batch["input_ids"]: (B, T) long; batch["labels"]: (B, T) long, already shifted (labels[t]
      is the target of position t); ignore_index marks positions without a target.
      model(input_ids) -> logits (B, T, V); the loss is computed in float32 with autocast off.
      keep = goldfish_mask(labels, ...) & (labels != ignore_index)   (mask first, then padding)
      loss = sum of -log softmax(logits)[label] over kept targets / number of kept targets.
      metrics (detached scalars):
        loss                 the goldfish loss above
        loss_all_tokens      cross-entropy over every non-ignored target (no mask)
        loss_dropped_tokens  cross-entropy over the dropped non-ignored targets; equal to
                             loss_all_tokens (= loss) when none is dropped, so that a value
                             averaged over micro-batches stays a loss and never shows a fake
                             drop to 0 (it is the spec's (all*N_all - gf*N_kept)/(N_all - N_kept)
                             otherwise)
        tokens               number of kept targets (the runner weights every metric by it)
        dropped_fraction     dropped / non-ignored targets (0 when every target is ignored)

    Arguments (defaults: the paper's released checkpoints and the official code):
      k=4               drop ~1/k of the targets; integer >= 2.
      strategy="hash"   "static" | "random" | "hash"; see goldfish_mask.
      context_width=13  h, ids per hash window; integer >= 1 (the official trainer defaults to
                        4, the released checkpoints say width 13).
      table_size=1_000_003, table_seed=2971215073: the official hash table (built on the CPU).
      start_position=0  first dropped position of "static".
      include_target_in_hash=True  the official code hashes the target with its w-1
                        predecessors; False hashes the w targets before it (the paper's text).
      ignore_index=-100 label of positions without a target (never a real id such as pad=eos).
      seed=0            "random" only: seed of this objective's own CPU torch.Generator, which
                        advances with every training call (evaluate draws nothing). Its state
                        is checkpointed (`state_dict`), so a resumed run draws the same masks
                        as an uninterrupted one; with several data-parallel ranks every rank draws the
                        same masks (for different data). The official code calls this strategy
                        seeded_random; the paper advises against it.

    Decisions where the spec leaves room:
      - Rows shorter than the window (T < context_width, or T <= context_width when the target
        is not hashed): nothing is dropped (goldfish = plain CE) instead of the official error;
        logged once per row length at WARNING.
      - Ignored labels take part in the hash of the windows around them with their value
        (ignore_index), as padding does in the official code (where ignore_index = pad id); they
        never count in any denominator. With right padding a row with fewer than w real targets
        drops nothing; with left padding, real targets whose window reaches into the padding are
        hashed with ignore_index in the product.
      - Packed documents: the batch carries no document boundaries, so windows run across the
        EOS separators between documents, exactly as the official code does (the spec: "fine to
        keep"). EOS/BOS targets are ordinary tokens and can be dropped. The first w-1 targets of
        every packed block have no full window and are always kept (the same tokens in every
        epoch, since blocks are cut at fixed offsets).
      - Every target dropped in a micro-batch: loss = 0.0 still attached to the graph (backward
        gives zero gradients, no NaN), tokens = 0, so the runner's token weighting gives that
        micro-batch no weight; as CrossEntropy does for an all-ignored batch.
    """

    batch_kind = "lm"

    def __init__(
        self,
        k: int = 4,
        strategy: Literal["static", "random", "hash"] = "hash",
        context_width: int = 13,
        table_size: int = TABLE_SIZE,
        table_seed: int = TABLE_SEED,
        start_position: int = 0,
        include_target_in_hash: bool = True,
        ignore_index: int = -100,
        seed: int = 0,
    ):
        self.k = _int_arg("k", k, 2)
        self.strategy = _check_strategy(strategy)
        self.context_width = _int_arg("context_width", context_width, 1)
        self.table_size = _int_arg("table_size", table_size, 1)
        self.table_seed = _int_arg("table_seed", table_seed, 0, _MAX_SEED)
        self.start_position = _int_arg("start_position", start_position, 0)
        self.include_target_in_hash = _check_bool("include_target_in_hash", include_target_in_hash)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise ValueError(f"ignore_index={ignore_index!r} is not allowed: it must be an integer (usually -100)")
        self.ignore_index = int(ignore_index)
        self.seed = _int_arg("seed", seed, 0, _MAX_SEED)
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed) if strategy == "random" else None
        self._ce = CrossEntropy(ignore_index=self.ignore_index)
        self._warned_lengths: set[int] = set()

    def mask(self, labels: torch.Tensor) -> torch.Tensor:
        """goldfish_mask(labels) with this objective's settings: (B, T) bool, True = kept by
        goldfish (before removing ignored positions). "random" advances the generator."""
        first = self.context_width - 1 if self.include_target_in_hash else self.context_width
        length = labels.shape[-1]
        if self.strategy == "hash" and length <= first and length not in self._warned_lengths:
            self._warned_lengths.add(length)
            log.warning("goldfish: rows of %d targets are too short for a hash window of width %d%s; "
                        "nothing is dropped from them (plain cross-entropy)", length, self.context_width,
                        "" if self.include_target_in_hash else " plus the target")
        return goldfish_mask(labels, k=self.k, strategy=self.strategy, context_width=self.context_width,
                             table_size=self.table_size, table_seed=self.table_seed,
                             start_position=self.start_position,
                             include_target_in_hash=self.include_target_in_hash, generator=self._generator)

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, labels = lm_logits(model, batch)
        vocab = logits.shape[-1]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            # One float32 log-softmax for all three losses; ignored positions give 0.
            per_token = F.cross_entropy(
                logits.float().reshape(-1, vocab),
                labels.reshape(-1).long(),
                ignore_index=self.ignore_index,
                reduction="none",
            ).view(labels.shape)
        with torch.no_grad():
            valid = labels != self.ignore_index
            keep = self.mask(labels) & valid
            dropped = valid & ~keep
            n_valid, n_keep, n_drop = valid.sum(), keep.sum(), dropped.sum()
        zero = per_token.new_zeros(())
        # torch.where rather than a product, so a non-finite loss at a dropped position cannot
        # leak into the sum or the gradient.
        loss = torch.where(keep, per_token, zero).sum() / n_keep.clamp(min=1)
        with torch.no_grad():
            detached = per_token.detach()
            loss_all = detached.sum() / n_valid.clamp(min=1)
            loss_dropped = torch.where(
                n_drop > 0, torch.where(dropped, detached, zero).sum() / n_drop.clamp(min=1), loss_all)
            fraction = n_drop.float() / n_valid.clamp(min=1).float()
        metrics = {
            "loss": loss.detach(),
            "loss_all_tokens": loss_all,
            "loss_dropped_tokens": loss_dropped,
            "tokens": n_keep,
            "dropped_fraction": fraction,
        }
        return loss, metrics

    def state_dict(self) -> dict:
        """What a checkpoint must keep for an exact resume: the "random" strategy's generator
        state (the other strategies are stateless)."""
        return {"generator": self._generator.get_state()} if self._generator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self._generator is not None and "generator" in state:
            self._generator.set_state(state["generator"])

    def evaluate(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Validation loss: plain cross-entropy over every non-ignored target, no mask (the
        official trainer does the same). Same (loss, {"loss", "ppl", "tokens"}) as CrossEntropy."""
        return self._ce(model, batch)

    def __repr__(self) -> str:
        return (f"Goldfish(k={self.k}, strategy={self.strategy!r}, context_width={self.context_width}, "
                f"table_size={self.table_size}, table_seed={self.table_seed}, "
                f"start_position={self.start_position}, include_target_in_hash={self.include_target_in_hash}, "
                f"ignore_index={self.ignore_index}, seed={self.seed})")
