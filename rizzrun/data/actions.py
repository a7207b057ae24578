"""A built-in robot-action task, generated on the fly: FAST-tokenized action chunks as an `lm` corpus.

Trajectories (`reach_trajectories`): a D-dim end effector makes consecutive minimum-jerk reaches
(Flash & Hogan 1985: x(s) = x0 + (x1 - x0)(10 s^3 - 15 s^4 + 6 s^5), s in [0, 1]) to uniform
random targets in [-1, 1]^D, each lasting a uniform 0.5-1.5 s, sampled at `hz`, plus Gaussian
noise; every dim is then scaled and shifted by a per-dim range (drawn once per trajectory_seed,
so the splits agree) so that the quantile normaliser has work to do. A trajectory is cut into
non-overlapping chunks of H = round(chunk_seconds * hz) steps (the rest dropped).

Tokenization (FAST, arXiv 2501.09747, `rizzrun.tokenizers.fast`): the data option owns FAST's
continuous half, a `FASTQuantizer` fitted on the training chunks (quantile normalisation ->
DCT -> round(scale * C) -> frequency-major flatten -> shift -> chr(z)); each chunk becomes one
document, the string of its coefficients. The run's text tokenizer is FAST's BPE half:
`tokenizer=bpe` learns byte-level BPE merges on exactly these strings (the training split,
as FAST's fit does; with its 3 specials and the full byte alphabet, so ids differ from the
reference's), `tokenizer=byte` is FAST without BPE (one id per coefficient below chr(128)).
So the tokenizer contract (text <-> ids) is kept: the "text" of an action chunk is its FAST
coefficient string. Documents are in trajectory order and packed with EOS between them, so a
model trained on the corpus predicts each chunk from the chunks before it.

Decoding: `decode_ids(tokenizer, ids)` turns a generated stream back into an (H, D) chunk in
the original units, or None for a malformed stream, counted by reason in
`quantizer.failures` (`special_id`, `unknown_id`, `bad_char`, `length`; never zero-filled).
`next_chunk_rollout(model, tokenizer, data)` measures greedy next-chunk prediction on a split.
The quantizer is a pure function of the data config (fit on generated data), so a later
process rebuilds it from a run folder's config.yaml: `load_run_actions(run_dir)`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

import torch

from rizzrun.data.lm import LMCorpus
from rizzrun.errors import InputError

__all__ = ["ActionChunks", "chunk_trajectory", "load_run_actions", "min_jerk", "next_chunk_rollout",
           "reach_trajectories"]

# Bump when the generator changes for the same options.
GENERATOR_VERSION = 1
REACH_SECONDS = (0.5, 1.5)


def min_jerk(x0: torch.Tensor, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, D) minimum-jerk positions from x0 (excluded) to x1 (included), evenly timed."""
    s = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return x0 + (x1 - x0) * blend[:, None]


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") & (2**63 - 1)


def dim_ranges(dims: int, trajectory_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) per dim: scale log-uniform in [0.2, 5], offset uniform in [-2, 2]."""
    g = torch.Generator().manual_seed(_seed("actions-dims", trajectory_seed, dims))
    scale = torch.exp(torch.empty(dims, dtype=torch.float64).uniform_(math.log(0.2), math.log(5), generator=g))
    offset = torch.empty(dims, dtype=torch.float64).uniform_(-2, 2, generator=g)
    return scale, offset


def reach_trajectories(n: int, dims: int, hz: float, seconds: float, noise: float = 0.01, trajectory_seed: int = 0,
                       split: str = "train") -> list[torch.Tensor]:
    """`n` trajectories of round(seconds * hz) steps, (T, D) float64 each (module docstring);
    a pure function of the arguments."""
    g = torch.Generator().manual_seed(_seed("actions", GENERATOR_VERSION, trajectory_seed, split, dims, hz, seconds))
    steps = round(seconds * hz)
    scale, offset = dim_ranges(dims, trajectory_seed)
    out = []
    for _ in range(n):
        pos = torch.rand(dims, generator=g, dtype=torch.float64) * 2 - 1
        pieces, length = [pos[None]], 1
        while length < steps:
            lo, hi = REACH_SECONDS
            dur = max(2, round(hz * (lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64)))))
            target = torch.rand(dims, generator=g, dtype=torch.float64) * 2 - 1
            pieces.append(min_jerk(pos, target, dur))
            length, pos = length + dur, target
        traj = torch.cat(pieces)[:steps] + noise * torch.randn(steps, dims, generator=g, dtype=torch.float64)
        out.append(traj * scale + offset)
    return out


def chunk_trajectory(traj: torch.Tensor, horizon: int) -> list[torch.Tensor]:
    """Non-overlapping (horizon, D) windows of a (T, D) trajectory, in time order; the last
    T mod horizon steps are dropped."""
    return [traj[i : i + horizon] for i in range(0, len(traj) - horizon + 1, horizon)]


def _check(key: str, value, kind: type, low=None, strict: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else kind)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        need = ("a number" if kind is float else "an integer") + (
            f" {'>' if strict else '>='} {low}" if low is not None else "")
        raise InputError(f"data.{key}={value!r}: must be {need} (ActionChunks)")


class ActionChunks(LMCorpus):
    """Synthetic minimum-jerk reach trajectories, FAST-quantized into one document per chunk
    (module docstring).

    n_train, n_val: trajectories per split (n_val=0: no validation split). dims: action
        dims D. hz: control rate. seconds: trajectory length. chunk_seconds: chunk length
        (H = round(chunk_seconds * hz) steps, 1 s in the FAST paper). noise: Gaussian noise
        std before the per-dim ranges. trajectory_seed: which trajectories are drawn.
    scale: FAST's gamma (10). max_range: the widest coefficient range (max - min) accepted,
        FAST's `vocab_size` assertion (keep it <= the BPE vocabulary). normalize, clip: the
        quantile normaliser (q01 -> -1, q99 -> +1; no clipping by default, as openpi).
    seq_len, batch_size, seed (block order), packing, cache_dir: as every lm corpus.
    """

    batch_kind = "lm"

    def __init__(
        self,
        n_train: int = 200,
        n_val: int = 20,
        dims: int = 2,
        hz: float = 20,
        seconds: float = 10,
        chunk_seconds: float = 1.0,
        noise: float = 0.01,
        trajectory_seed: int = 0,
        scale: float = 10.0,
        max_range: int = 1024,
        normalize: bool = True,
        clip: bool = False,
        seq_len: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        packing: Literal["concat", "document"] = "concat",
        cache_dir: str | None = None,
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        for key, value, kind, low, strict in (
            ("n_train", n_train, int, 1, False), ("n_val", n_val, int, 0, False), ("dims", dims, int, 1, False),
            ("hz", hz, float, 0, True), ("seconds", seconds, float, 0, True),
            ("chunk_seconds", chunk_seconds, float, 0, True), ("noise", noise, float, 0, False),
            ("trajectory_seed", trajectory_seed, int, 0, False), ("scale", scale, float, 0, True),
            ("max_range", max_range, int, 1, False),
        ):
            _check(key, value, kind, low, strict)
        for key, value in (("normalize", normalize), ("clip", clip)):
            if not isinstance(value, bool):
                raise InputError(f"data.{key}={value!r}: must be true or false (ActionChunks)")
        self.horizon = round(chunk_seconds * hz)
        if self.horizon < 1 or self.horizon > round(seconds * hz):
            raise InputError(f"data.chunk_seconds={chunk_seconds}: a chunk of round(chunk_seconds * hz) = "
                             f"{self.horizon} steps must fit in a trajectory of round(seconds * hz) = "
                             f"{round(seconds * hz)} steps and hold at least one")
        self.n_train, self.n_val, self.dims, self.hz = n_train, n_val, dims, float(hz)
        self.seconds, self.chunk_seconds, self.noise = float(seconds), float(chunk_seconds), float(noise)
        self.trajectory_seed, self.scale, self.max_range = trajectory_seed, float(scale), max_range
        self.normalize, self.clip = normalize, clip
        self._trajectories: dict[str, list[torch.Tensor]] = {}
        self._quantizer = None
        self._texts: dict[str, list[str]] = {}

    # -- data ------------------------------------------------------------------------------

    @property
    def splits(self) -> list[str]:
        return ["train", "val"] if self.n_val else ["train"]

    def trajectories(self, split: str) -> list[torch.Tensor]:
        """The (T, D) trajectories of `split`, in order."""
        if split not in self.splits:
            raise ValueError(f"ActionChunks: split {split!r}; valid: {', '.join(self.splits)}")
        if split not in self._trajectories:
            n = self.n_train if split == "train" else self.n_val
            self._trajectories[split] = reach_trajectories(n, self.dims, self.hz, self.seconds, self.noise,
                                                           self.trajectory_seed, split)
        return self._trajectories[split]

    def chunks(self, split: str) -> list[list[torch.Tensor]]:
        """Per trajectory, its (H, D) chunks in time order."""
        return [chunk_trajectory(t, self.horizon) for t in self.trajectories(split)]

    @property
    def quantizer(self):
        """The `FASTQuantizer` fitted on the training chunks (built on first use)."""
        if self._quantizer is None:
            from rizzrun.tokenizers.fast import FASTQuantizer

            q = FASTQuantizer(self.scale, self.max_range, self.normalize, self.clip)
            try:
                texts = q.fit([c for traj in self.chunks("train") for c in traj])
            except ValueError as err:
                raise InputError(f"data.scale={self.scale}, data.max_range={self.max_range}: {err} (here vocab_size "
                                 f"is data.max_range; keep it <= the tokenizer's vocabulary)") from err
            self._quantizer, self._texts["train"] = q, texts
        return self._quantizer

    def documents(self, split: str) -> list[str]:
        """One FAST coefficient string per chunk, trajectory by trajectory."""
        q = self.quantizer
        if split not in self._texts:
            self._texts[split] = [q.to_text(c) for traj in self.chunks(split) for c in traj]
        return self._texts[split]

    @property
    def fingerprint(self) -> str:
        key = ["actions", GENERATOR_VERSION, self.n_train, self.n_val, self.dims, self.hz, self.seconds,
               self.chunk_seconds, self.noise, self.trajectory_seed, self.scale, self.max_range, self.normalize,
               self.clip]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in self.splits}

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"

    # -- decoding ----------------------------------------------------------------------------

    def encode_chunk(self, tokenizer, chunk) -> list[int]:
        """An (H, D) chunk in original units -> the run tokenizer's ids of its FAST string."""
        return tokenizer.encode(self.quantizer.to_text(chunk))

    def decode_ids(self, tokenizer, ids, on_failure: str = "none") -> torch.Tensor | None:
        """Generated ids (up to the first EOS, which ends them) -> (H, D) float64 chunk in
        original units, or None for a malformed stream, counted in `quantizer.failures`:
        `special_id` (BOS/PAD inside the stream), `unknown_id` (an id the tokenizer cannot
        decode), `bad_char`, `length` (rizzrun.tokenizers.fast.FASTQuantizer.from_text)."""
        from rizzrun.tokenizers.fast import ON_FAILURE

        if on_failure not in ON_FAILURE:
            raise ValueError(f"decode_ids: on_failure={on_failure!r}; valid: {', '.join(ON_FAILURE)}")
        q = self.quantizer
        ids = [int(i) for i in ids]
        eos = getattr(tokenizer, "eos_id", None)
        if eos in ids:
            ids = ids[: ids.index(eos)]
        specials = {getattr(tokenizer, name, None) for name in ("bos_id", "pad_id")} - {None, eos}
        if any(i in specials for i in ids):
            q.decoded += 1
            return q.fail("special_id", "a BOS or PAD id inside the stream", self.horizon, on_failure)
        try:
            text = tokenizer.decode(ids)
        except ValueError as err:
            q.decoded += 1
            return q.fail("unknown_id", str(err), self.horizon, on_failure)
        return q.from_text(text, self.horizon, on_failure)


@torch.no_grad()
def next_chunk_rollout(model, tokenizer, data: ActionChunks, split: str = "val", max_new_tokens: int | None = None,
                       batch_size: int = 32, limit: int | None = None) -> dict:
    """Greedy next-chunk prediction: for every pair of consecutive chunks (c_t, c_t+1) of a
    trajectory of `split`, prompt EOS + ids(c_t) + EOS (as documents sit in the packed stream),
    generate until EOS, decode with `data.decode_ids`. Returns {pairs, failures (by reason),
    failure_rate, mse (mean over well-formed predictions, original units; None if none),
    floor_mse (the quantization alone: decode(encode(c_t+1)) vs c_t+1)}. `limit`: the first
    `limit` pairs only."""
    from rizzrun.decoders.loop import decode_loop

    pairs = [(a, b) for traj in data.chunks(split) for a, b in zip(traj, traj[1:])][:limit]
    if not pairs:
        raise ValueError(f"next_chunk_rollout: split {split!r} has no pair of consecutive chunks")
    q = data.quantizer
    before = dict(q.failures)
    eos = tokenizer.eos_id
    prompts = [[eos, *data.encode_chunk(tokenizer, a), eos] for a, _ in pairs]
    if max_new_tokens is None:
        max_new_tokens = 2 * max(len(p) for p in prompts)
    limit_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if limit_len is not None:
        max_new_tokens = min(max_new_tokens, limit_len - max(len(p) for p in prompts))
    was_training = model.training
    model.eval()
    errors, floor = [], []
    for i in range(0, len(pairs), batch_size):
        batch = prompts[i : i + batch_size]
        out = decode_loop(model, batch, lambda s: s.argmax(dim=-1), max_new_tokens, eos,
                          pad_token_id=tokenizer.pad_id)
        width = max(len(p) for p in batch)
        for row, (_, target) in zip(out[:, width:].tolist(), pairs[i : i + batch_size]):
            if eos not in row:  # ran out of tokens: count it as a malformed stream, whatever it decodes to
                q.decoded += 1
                q.fail("no_eos", f"no EOS in {max_new_tokens} tokens", data.horizon, "none")
                continue
            pred = data.decode_ids(tokenizer, row)
            if pred is not None:
                errors.append(float(((pred - target) ** 2).mean()))
    for _, target in pairs:  # the quantization alone (BPE is lossless), outside the counters
        ints = q.to_integers(target).clamp(q.min_token, q.max_token)
        floor.append(float(((q.from_integers(ints, data.horizon) - target) ** 2).mean()))
    model.train(was_training)
    failures = {k: v - before.get(k, 0) for k, v in q.failures.items() if v - before.get(k, 0)}
    return {"pairs": len(pairs), "failures": failures, "failure_rate": sum(failures.values()) / len(pairs),
            "mse": sum(errors) / len(errors) if errors else None, "floor_mse": sum(floor) / len(floor)}


def load_run_actions(run_dir):
    """(data, tokenizer) of a run trained on `data=actions`: the data option rebuilt from the
    run's config.yaml (its quantizer refitted on the same generated training chunks) and the
    run's saved tokenizer, ready for `decode_ids` / `next_chunk_rollout`."""
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rizzrun import layout
    from rizzrun.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / layout.CONFIG)
    target = cfg.data.get("_target_")
    if target != f"{__name__}.ActionChunks":
        raise ValueError(f"{run_dir}: data._target_={target!r}; load_run_actions reads runs of data=actions "
                         f"({__name__}.ActionChunks)")
    return instantiate(cfg.data), load_tokenizer(run_dir / layout.TOKENIZER)
