"""Completions a sample job wrote (`job=sample`, rizzrun.runner.sample_job), filtered by reward, as an
`lm` corpus: the Improve step of ReST (Gulcehre et al., arXiv 2308.08998), and the fine-tuning data
of any loop that trains on the model's own filtered samples (STaR, rejection-sampling fine-tuning).

A document is prompt + completion (as the built-in tasks' SFT documents: joined by EOS when packed,
so the model learns to stop). Per split of the sample run (rollouts/train.jsonl, val.jsonl when
sampled), in this order:
1. the data's reference answers (sample = -1 rows) are kept only with `references=true`;
2. `drop_truncated`: completions that hit max_new_tokens without EOS are dropped (ReST's default);
3. `dedupe`: one of each distinct completion per prompt (popular outputs get no extra weight);
4. the filter (unscorable rows never pass): F = 1[reward > tau] with tau = `min_reward` (ReST's
   rule), or F = 1[reward >= tau] with tau = the `quantile` of the split's remaining rewards (ReST's
   rising thresholds as a quantile schedule, rest.md: robust to the reward's scale; ties at the
   quantile kept, since rewards are often discrete: a 0.9 quantile equal to the best reward keeps
   the best completions, not none), or no filter when both are null (self-distillation, ReST's
   "tau = 0" control);
5. `per_prompt`: at most that many kept completions per prompt, the highest rewards first.
stats["rollouts"][split]: rows read, kept, kept fraction, prompts with none kept, the threshold,
mean reward before and after. No split may end up empty (InputError naming the setting to relax).

The sample run's own data (its config.yaml's `data`, set up with this run's tokenizer) answers for the
task: `verify`, `extra_text`, `prompts(split)` and `prompt_token_ids(split)` come from it, so a run on
rollouts of a verifiable task is judged by the task's held-out greedy accuracy (`eval.at_end`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

from rizzrun.data.lm import LMCorpus
from rizzrun.errors import InputError

__all__ = ["RolloutSFT", "filter_rollouts", "read_rollouts"]

VERSION = 2  # 2: a quantile threshold keeps ties (>=); the tokenized cache must not serve version 1's documents


def read_rollouts(folder: str | Path, split: str) -> list[dict]:
    """The rows of a sample run's rollouts/<split>.jsonl (InputError naming the folder when absent)."""
    from rizzrun.runner.sample_job import rollout_file

    path = rollout_file(Path(folder).expanduser(), split)
    if not path.is_file():
        raise InputError(f"data.path={folder}: no {path.relative_to(Path(folder).expanduser())}; data=rollouts reads a "
                         "sample run's folder (job=sample; sample.splits names the splits it wrote)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InputError(f"data.path={folder}: {path.name} line {i + 1} is not JSON ({e})") from None
    return rows


def filter_rollouts(rows: list[dict], min_reward: float | None = None, quantile: float | None = None,
                    dedupe: bool = True, drop_truncated: bool = True, references: bool = False,
                    per_prompt: int | None = None) -> tuple[list[dict], dict]:
    """(kept rows, stats) by the rules of the module docstring."""
    pool = [r for r in rows if (r["sample"] >= 0 or references) and not (drop_truncated and r["truncated"])]
    if dedupe:
        seen, unique = set(), []
        for r in pool:
            key = (r["row"], r["completion"])
            if key not in seen:
                seen.add(key)
                unique.append(r)
        pool = unique
    scored = sorted(r["reward"] for r in pool if r["reward"] is not None)
    tau = min_reward
    if quantile is not None and scored:
        tau = _quantile(scored, quantile)
    if quantile is not None:  # the top share, ties at the quantile kept (rewards are often discrete)
        kept = [r for r in pool if r["reward"] is not None and (tau is None or r["reward"] >= tau)]
    else:
        kept = [r for r in pool if r["reward"] is not None and (tau is None or r["reward"] > tau)]
    if per_prompt is not None:
        by_prompt: dict[int, list[dict]] = {}
        for r in kept:
            by_prompt.setdefault(r["row"], []).append(r)
        kept = [r for group in by_prompt.values()
                for r in sorted(group, key=lambda x: -x["reward"])[:per_prompt]]
        kept.sort(key=lambda r: (r["row"], r["sample"]))
    prompts = {r["row"] for r in rows}
    mean = (lambda xs: sum(xs) / len(xs) if xs else math.nan)
    return kept, {"rows": len(rows), "candidates": len(pool), "kept": len(kept),
                  "kept_fraction": len(kept) / max(len(pool), 1), "threshold": tau,
                  "prompts": len(prompts), "prompts_with_zero_kept": len(prompts - {r["row"] for r in kept}),
                  "reward_before": mean(scored), "reward_kept": mean([r["reward"] for r in kept])}


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class RolloutSFT(LMCorpus):
    """prompt + completion documents of a sample run, filtered by reward (module docstring).

    path: the sample run's folder. min_reward | quantile: the threshold tau (reward > tau kept); at
    most one; both null: no filter. references: keep the data's reference answers (sample.include_reference).
    dedupe, drop_truncated, per_prompt: see the module docstring. seq_len, batch_size, seed, packing,
    cache_dir: as every lm corpus.
    """

    batch_kind = "lm"

    def __init__(
        self,
        path: str,
        min_reward: float | None = None,
        quantile: float | None = None,
        references: bool = False,
        dedupe: bool = True,
        drop_truncated: bool = True,
        per_prompt: int | None = None,
        seq_len: int = 64,
        batch_size: int = 16,
        seed: int = 0,
        packing: Literal["concat", "document"] = "concat",
        cache_dir: str | None = None,
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        if min_reward is not None and quantile is not None:
            raise InputError(f"data.min_reward={min_reward}, data.quantile={quantile}: give one threshold, not both")
        if quantile is not None and not (isinstance(quantile, (int, float)) and 0 <= quantile < 1):
            raise InputError(f"data.quantile={quantile!r}: must be in [0, 1)")
        if per_prompt is not None and (isinstance(per_prompt, bool) or not isinstance(per_prompt, int) or per_prompt < 1):
            raise InputError(f"data.per_prompt={per_prompt!r}: must be an integer >= 1 or null")
        self.path = str(path)
        self.filter = dict(min_reward=min_reward, quantile=quantile, dedupe=dedupe, drop_truncated=drop_truncated,
                           references=references, per_prompt=per_prompt)
        self._kept: dict[str, list[dict]] | None = None
        self.rollout_stats: dict[str, dict] = {}
        self._source = None

    def _splits(self) -> list[str]:
        from rizzrun.runner.sample_job import rollout_file

        return [s for s in ("train", "val") if rollout_file(Path(self.path).expanduser(), s).is_file()]

    def _documents(self) -> dict[str, list[str]]:
        if self._kept is None:
            kept = {}
            for split in self._splits() or ["train"]:
                rows, stats = filter_rollouts(read_rollouts(self.path, split), **self.filter)
                if not rows:
                    raise InputError(f"data.path={self.path}: no {split} completion passes the filter ({stats['candidates']} "
                                     f"candidates, threshold {stats['threshold']}); lower data.min_reward / "
                                     "data.quantile, or sample more")
                kept[split], self.rollout_stats[split] = rows, stats
            self._kept = kept
        return {s: [r["prompt"] + r["completion"] for r in rows] for s, rows in self._kept.items()}

    @property
    def fingerprint(self) -> str:
        from rizzrun.runner.sample_job import rollout_file

        h = hashlib.sha256(json.dumps(["rollout-sft", VERSION, self.filter], sort_keys=True).encode())
        for split in self._splits():
            h.update(rollout_file(Path(self.path).expanduser(), split).read_bytes())
        return h.hexdigest()

    def documents(self, split: str) -> list[str]:
        return self._documents()[split]

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": docs}) for s, docs in self._documents().items()}

    def _split_origin(self, split: str) -> tuple[str, str]:
        return f"data.path={self.path}", "lower the threshold or sample more"

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        super().setup(tokenizer, cache_dir)
        self._source = self._source_data(tokenizer, cache_dir)

    def _source_data(self, tokenizer, cache_dir):
        """The sample run's data option, set up with this tokenizer (None when it cannot be built)."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from rizzrun import layout

        config = Path(self.path).expanduser() / layout.CONFIG
        if not config.is_file():
            return None
        source = instantiate(OmegaConf.load(config).data)
        source.setup(tokenizer, cache_dir=cache_dir)
        return source

    def __getattr__(self, name: str):
        # The task's verifier and held-out prompts, from the sample run's data (module docstring).
        if name in ("verify", "extra_text", "prompts", "prompt_token_ids") and self.__dict__.get("_source") is not None:
            if hasattr(self._source, name):
                return getattr(self._source, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def stats(self) -> dict:
        return {**super().stats, "rollouts": self.rollout_stats}
