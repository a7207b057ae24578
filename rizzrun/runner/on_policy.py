"""What a run of a `prompts` objective does around the objective (docs/contracts.md "Rollouts"):
make rollouts from each prompt batch with the run's decoder, score them with the rewards, let the
objective `prepare` them, and keep them for the objective's `num_iterations` optimizer steps.

`OnPolicy` is plain PyTorch (the Lightning module calls it): `batch_for(model, prompts, step, micro,
extra)` -> (the prepared batch, the rollout's metrics, seconds spent); `validate(model, prompts,
step)` -> reward metrics of one completion per prompt; `state_dict()` keeps the prepared batches of
an unfinished block of mu steps (every rank's, gathered), so a resume inside a block trains on the
same rollouts as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import torch

from rizzrun.rewards.combine import RewardSet
from rizzrun.rollouts.sample import completion_texts, rollout_metrics, sample_rollout, score_rows
from rizzrun.rollouts.schedule import is_generation_step

__all__ = ["OnPolicy", "build_rewards", "rollout_seed", "row_seeds"]


def row_seeds(base: int, step: int, rows, num_generations: int, kind: str = "train") -> list[int]:
    """The random stream of each completion of a rollout (completion order: row-major, then sample): a
    pure function of (base seed, optimizer step, the prompt's data row, sample index), so a prompt's
    completions are the same whichever micro-batch or process makes them."""
    out = []
    for row in (int(r) for r in rows):
        for g in range(num_generations):
            digest = hashlib.sha256(f"rizzrun-row:{kind}:{base}:{step}:{row}:{g}".encode()).digest()
            out.append(int.from_bytes(digest[:8], "big") & (2**63 - 1))
    return out


def rollout_seed(base: int, step: int, micro: int, rank: int, kind: str = "train") -> int:
    """The decoder seed of one rollout: a pure function of (base seed, optimizer step, micro-batch,
    rank, train|val), so a resumed run draws the same completions and ranks draw different ones."""
    digest = hashlib.sha256(f"rizzrun-rollout:{kind}:{base}:{step}:{micro}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class OnPolicy:
    """objective: a `prompts` objective (num_generations, num_iterations, prepare, __call__).
    decoder: any rizzrun decoder. tokenizer: the run's (decodes completions for the rewards).
    rewards: a RewardSet. columns: rows (Tensor) -> (prompt texts, {column: values}) (the data's
    `columns`). seed: the run's seed (the decoder's own seed, when set, is used instead)."""

    def __init__(self, objective, decoder, tokenizer, rewards: RewardSet,
                 columns: Callable[[torch.Tensor], tuple[list[str], dict[str, list[Any]]]], seed: int = 0):
        self.objective, self.decoder, self.tokenizer = objective, decoder, tokenizer
        self.rewards, self.columns = rewards, columns
        self.num_generations = int(objective.num_generations)
        self.iterations = int(getattr(objective, "num_iterations", 1))
        base = getattr(decoder, "seed", None)
        self.base_seed = int(seed if base is None else base)
        self._held: dict[int, tuple[dict, dict]] = {}  # micro-batch index -> (prepared batch, metrics)
        self._restored: dict[int, tuple[dict, dict]] | None = None

    def score(self, rollout: dict) -> dict:
        """Add rewards to a rollout (in place, and returned): each completion scored against the data
        row of its prompt (`rollout["row"]`, one per completion: any layout of attempts and groups)."""
        prompts, cols = self.columns(rollout["row"])
        return score_rows(rollout, completion_texts(rollout, self.tokenizer), self.rewards, prompts, cols)

    def _rollout(self, model, prompts: dict, seed: int, num_generations: int, extra: dict | None = None,
                 own: bool = True, streams: list[int] | None = None) -> tuple[dict, dict]:
        """(the scored rollout, its metrics) of one prompt batch: the objective's own `rollout` hook
        when it has one (and `own`), else num_generations samples of each prompt by the decoder."""
        previous = getattr(self.decoder, "seed", None)
        if hasattr(self.decoder, "seed"):
            self.decoder.seed = seed
        try:
            hook = getattr(self.objective, "rollout", None) if own else None
            if hook is not None:
                with torch.no_grad():
                    rollout = hook(model, self.decoder, prompts, self.score, self.tokenizer.eos_id, **(extra or {}))
            else:
                rollout = self.score(sample_rollout(model, self.decoder, prompts, num_generations,
                                                    self.tokenizer.eos_id, row_seeds=streams))
        finally:
            if hasattr(self.decoder, "seed"):
                self.decoder.seed = previous
        return rollout, rollout_metrics(rollout, self.rewards.names, num_generations)

    def batch_for(self, model, prompts: dict, step: int, micro: int, rank: int = 0,
                  extra: dict | None = None) -> tuple[dict, dict, float]:
        """The prepared batch micro-batch `micro` of optimizer step `step` trains on: made from
        `prompts` at the first step of a block of num_iterations, else the one made then."""
        if self._restored is not None:  # a resume inside a block: the checkpoint's batches
            self._held, self._restored = self._restored, None
        if not is_generation_step(step, self.iterations) and micro in self._held:
            batch, metrics = self._held[micro]
            device = prompts["row"].device
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if not torch.equal(batch["row"][:: self.num_generations].cpu(), prompts["row"].cpu()):
                raise RuntimeError(f"step {step}, micro-batch {micro}: the data repeated other prompts than the "
                                   "rollouts were made from (the stream must repeat each block: repeat_blocks)")
            return batch, metrics, 0.0
        started = time.perf_counter()
        rollout, metrics = self._rollout(model, prompts, rollout_seed(self.base_seed, step, micro, rank),
                                         self.num_generations, extra,
                                         streams=row_seeds(self.base_seed, step, prompts["row"], self.num_generations))
        with torch.no_grad():
            batch = self.objective.prepare(model, rollout, **(extra or {}))
        if self.iterations > 1:
            self._held[micro] = (batch, metrics)
        return batch, metrics, time.perf_counter() - started

    @torch.no_grad()
    def validate(self, model, prompts: dict, step: int, index: int = 0, rank: int = 0) -> dict[str, torch.Tensor]:
        """Metrics of one completion per prompt (the run's decoder, seeded by step and batch):
        reward, rewards/<name>/mean, completions/mean_length, ... and `completions` (the count)."""
        rollout, metrics = self._rollout(model, prompts, rollout_seed(self.base_seed, step, index, rank, "val"), 1,
                                         own=False, streams=row_seeds(self.base_seed, step, prompts["row"], 1, "val"))
        keep = ("reward", "completions/mean_length", "completions/clipped_ratio")
        out = {k: v for k, v in metrics.items() if k in keep or (k.startswith("rewards/") and k.endswith("/mean"))}
        out["completions"] = torch.tensor(float(rollout["completion_mask"].shape[0]))
        return out

    # --- a resume inside a block of num_iterations steps --------------------------------
    def state_dict(self, step: int) -> dict:
        """The held batches when optimizer step `step` is inside a block (else nothing), of every
        rank of a distributed run: {"step": step, "ranks": [{micro: (batch, metrics)}, ...]}."""
        if self.iterations == 1 or is_generation_step(step, self.iterations):
            return {}
        mine = {m: ({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in b.items()},
                    {k: v.cpu() for k, v in metrics.items()}) for m, (b, metrics) in self._held.items()}
        ranks = [mine]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, mine)
        return {"step": step, "ranks": ranks}

    def load_state_dict(self, state: dict, rank: int = 0, device=None) -> None:
        if not state:
            return
        ranks = state["ranks"]
        if rank >= len(ranks):
            raise RuntimeError(f"the checkpoint holds the rollouts of {len(ranks)} processes; this is rank {rank}")
        self._restored = {int(m): ({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()},
                                   metrics) for m, (b, metrics) in ranks[rank].items()}


def build_rewards(node, data) -> RewardSet:
    """The RewardSet of `rewards` (a mapping NAME -> Hydra node with an optional `weight`;
    docs/contracts.md "Rollouts"), or the data's own (`data.default_rewards()`) when it is null."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rizzrun.errors import InputError

    if node is None:
        own = data.default_rewards() if hasattr(data, "default_rewards") else None
        if not own:
            raise InputError(f"rewards=null: data {type(data).__name__} brings no reward of its own; set "
                             "rewards.NAME._target_=<a reward function> (with _partial_: true), e.g. "
                             "rizzrun.rewards.verifiable.exact_match")
        return RewardSet({k: fn for k, (fn, _) in own.items()}, {k: w for k, (_, w) in own.items()})
    spec = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    functions, weights = {}, {}
    for name, entry in spec.items():
        entry = dict(entry)
        weights[name] = entry.pop("weight", 1.0)
        fn = instantiate(entry)
        if not callable(fn):
            raise InputError(f"rewards.{name}: {entry.get('_target_')} built {fn!r}, not a function; a reward "
                             "function needs _partial_: true (a class must build a callable instance)")
        functions[name] = fn
    return RewardSet(functions, weights)
