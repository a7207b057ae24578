"""Preference pairs made from the completions a sample run wrote (`job=sample`), ranked by their
reward: the proxy reward model's data of BSPO's tiny setup (arXiv:2503.18130; the spec's "how to
show it": sample responses from the SFT policy, label them with a gold programmatic reward, build
pairs, train a reward model that is accurate only near that distribution).

Per split of the sample run (rollouts/train.jsonl -> train; val.jsonl -> val when sampled), per
prompt: the distinct completions (EOS reached, unless drop_truncated=false) with a reward (and the
data's reference answer of `sample.include_reference` runs, with references=true); every
two whose rewards differ by at least `min_gap` make a pair (higher reward chosen); the
`per_prompt` pairs with the largest gaps are kept (ties: completion text order). Tokenized and
batched as every `preference` data (rizzrun.data.pairs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rizzrun.data.pairs import PairData, rows_dataset
from rizzrun.data.rollouts import filter_rollouts, read_rollouts
from rizzrun.errors import InputError

__all__ = ["RolloutPairs", "rollout_pairs"]

VERSION = 2


def rollout_pairs(rows: list[dict], min_gap: float = 1e-6, per_prompt: int | None = 4,
                  drop_truncated: bool = True, references: bool = False) -> list[tuple[str, str, str]]:
    """[(prompt, chosen, rejected)] of a sample run's rows (module docstring), in prompt-row order."""
    kept, _ = filter_rollouts(rows, dedupe=True, drop_truncated=drop_truncated, references=references)
    by_row: dict[int, list[dict]] = {}
    for r in kept:
        by_row.setdefault(r["row"], []).append(r)
    out = []
    for row in sorted(by_row):
        group = sorted(by_row[row], key=lambda r: (-r["reward"], r["completion"]))
        pairs = [(a["reward"] - b["reward"], a["completion"], b["completion"])
                 for i, a in enumerate(group) for b in group[i + 1:] if a["reward"] - b["reward"] >= min_gap]
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        out += [(group[0]["prompt"], c, r) for _, c, r in pairs[:per_prompt]]
    return out


class RolloutPairs(PairData):
    """(prompt, chosen, rejected) pairs of a sample run's completions, by reward (module docstring).

    path: the sample run's folder. min_gap: the least reward difference of a pair (> 0).
    per_prompt: at most this many pairs per prompt (null: all). drop_truncated: leave out
    completions that hit max_new_tokens. references: also pair the data's reference answers (rows a
    sample run with sample.include_reference=true wrote). max_length, max_prompt_length, truncation, batch_size,
    seed, cache_dir: rizzrun.data.pairs.PairData.
    """

    batch_kind = "preference"

    def __init__(self, path: str, min_gap: float = 1e-6, per_prompt: int | None = 4, drop_truncated: bool = True,
                 references: bool = False, max_length: int | None = None, max_prompt_length: int | None = None,
                 truncation: str = "keep_start", batch_size: int = 16, seed: int = 0, cache_dir: str | None = None):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir, max_length=max_length,
                         max_prompt_length=max_prompt_length, truncation=truncation, format="plain")
        if isinstance(min_gap, bool) or not isinstance(min_gap, (int, float)) or not min_gap > 0:
            raise InputError(f"data.min_gap={min_gap!r}: must be a number > 0")
        if per_prompt is not None and (isinstance(per_prompt, bool) or not isinstance(per_prompt, int)
                                       or per_prompt < 1):
            raise InputError(f"data.per_prompt={per_prompt!r}: must be an integer >= 1 or null")
        for name, value in (("drop_truncated", drop_truncated), ("references", references)):
            if not isinstance(value, bool):
                raise InputError(f"data.{name}={value!r}: must be true or false")
        self.references = references
        self.path, self.min_gap, self.per_prompt, self.drop_truncated = str(path), float(min_gap), per_prompt, \
            drop_truncated
        self._raw = None

    def _splits(self) -> list[str]:
        from rizzrun.runner.sample_job import rollout_file

        return [s for s in ("train", "val") if rollout_file(Path(self.path).expanduser(), s).is_file()]

    def _data_key(self) -> str:
        from rizzrun.runner.sample_job import rollout_file

        h = hashlib.sha256(json.dumps(["rollout-pairs", VERSION, self.min_gap, self.per_prompt,
                                       self.drop_truncated, self.references]).encode())
        for split in self._splits():
            h.update(rollout_file(Path(self.path).expanduser(), split).read_bytes())
        return h.hexdigest()

    def _raw_parts(self) -> dict:
        if self._raw is None:
            parts = {}
            for split in self._splits() or ["train"]:
                pairs = rollout_pairs(read_rollouts(self.path, split), self.min_gap, self.per_prompt,
                                      self.drop_truncated, self.references)
                parts[split] = rows_dataset([p for p, _, _ in pairs], [c for _, c, _ in pairs],
                                            [r for _, _, r in pairs], [False] * len(pairs), range(len(pairs)))
            self._raw = parts
        return self._raw

    def _split_origin(self, part: str) -> tuple[str, str]:
        return f"data.path={self.path}", "sample more completions per prompt, or lower data.min_gap"
