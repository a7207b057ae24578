"""A built-in verifiable task, generated on the fly: addition problems "37+48=" -> "85".

Problems: candidate k of a problem set is (a, b), two operands of `digits` digits
(10**(digits-1) .. 10**digits - 1; 0..9 for digits=1) read from sha256("arith:<problem_seed>:
<digits>:<k>"), so a problem set is a pure function of (problem_seed, digits, sizes). Problem
(a, b) is held out iff stable_unit("a+b") < val_fraction: the rule depends on nothing but the
problem, so every data option built with one val_fraction (the SFT corpus, the preference pairs,
their eval sets) agrees on what is held out, and no training problem is ever a held-out one. A
problem set takes the first n_train distinct training candidates and the first n_val distinct
held-out candidates in k order.

Answers: `answer_of(completion)` is the leading integer of a completion (after leading
whitespace); `verify(prompt, completion)` says whether it is the true sum; whatever follows it
is ignored for correctness and reported by `extra_text` (a tiny model that learned an artifact
such as " Sure!" still answers correctly, and the artifact is measured apart).

Components:
- ArithmeticSFT (`data=arithmetic_sft`): an `lm` corpus whose documents are "37+48=85"
  (training problems in train, held-out ones in val), joined by EOS when packed; a model trained
  on it answers the prompt EOS + "37+48=" and stops with EOS, which is exactly how the pairs
  below and the runner's sampled prompts begin.
- ArithmeticPairs (`data=arithmetic_pairs`): preference pairs prompt "37+48=", chosen the true
  sum, rejected a plausible wrong sum (`wrong_answer`). In training pairs, the chosen completion
  carries `artifact` (e.g. " Sure!") for exactly round(artifact_rate * n_train) pairs, chosen by
  a stable hash; the rejected never does. This builds the artifact experiment of RRM
  (arXiv 2409.13156) and, with a long artifact at rate 1, the length confound of D²PO
  (arXiv 2502.14340; chosen longer than rejected). Validation pairs carry no artifact unless
  val_artifact=true (then the training rate). eval_sets(): "clean" (no artifact anywhere) and
  "flipped" (the artifact on every rejected, never on the chosen), both over the validation
  problems, with row ids after the validation rows.
- ArithmeticPrompts (`data=arithmetic_prompts`): the prompts "37+48=" with their sums (column
  `answer`) as `prompts` batches, for on-policy objectives (GRPO, ReST), same problems and hold-out.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from rizzrun.data.lm import LMCorpus, stable_unit
from rizzrun.data.pairs import PairData, rows_dataset
from rizzrun.data.prompts import PromptData
from rizzrun.errors import InputError

__all__ = ["ArithmeticPairs", "ArithmeticPrompts", "ArithmeticSFT", "answer_of", "extra_text", "generate_problems", "is_held_out",
           "prompt_of", "verify", "wrong_answer"]

# Bump when the generator or the pairs change for the same options.
GENERATOR_VERSION = 1
_PROMPT = re.compile(r"^\s*(\d+)\+(\d+)=\s*$")
_ANSWER = re.compile(r"^\s*(\d+)")
_EXACT_LIMIT = 1_000_000  # problem spaces up to this size are counted exactly before drawing


def _h(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def operand_range(digits: int) -> tuple[int, int]:
    """(lowest, highest) operand with `digits` digits."""
    return (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1


def prompt_of(a: int, b: int) -> str:
    return f"{a}+{b}="


def is_held_out(a: int, b: int, val_fraction: float) -> bool:
    """Whether problem (a, b) belongs to validation: stable_unit("a+b") < val_fraction."""
    return stable_unit(f"{a}+{b}") < val_fraction


def candidate(problem_seed: int, digits: int, k: int) -> tuple[int, int]:
    lo, hi = operand_range(digits)
    h = _h(f"arith:{problem_seed}:{digits}:{k}")
    span = hi - lo + 1
    return lo + (h >> 64) % span, lo + (h & (2**64 - 1)) % span


def _capacity(digits: int, val_fraction: float) -> tuple[int, int] | None:
    """(training problems, held-out problems) in the whole space, when small enough to count."""
    lo, hi = operand_range(digits)
    if (hi - lo + 1) ** 2 > _EXACT_LIMIT:
        return None
    held = sum(is_held_out(a, b, val_fraction) for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    return (hi - lo + 1) ** 2 - held, held


def generate_problems(n_train: int, n_val: int, digits: int = 2, val_fraction: float = 0.1,
                      problem_seed: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training problems, held-out problems): the first n_train / n_val distinct candidates of
    each kind (module docstring). InputError when the space holds fewer."""
    capacity = _capacity(digits, val_fraction)
    if capacity is not None:
        for key, want, have, fix in (("n_train", n_train, capacity[0], "lower data.val_fraction"),
                                     ("n_val", n_val, capacity[1], "raise data.val_fraction")):
            if want > have:
                raise InputError(f"data.{key}={want}: only {have} distinct {digits}-digit problems are "
                                 f"{'held out' if key == 'n_val' else 'left for training'} with data.val_fraction="
                                 f"{val_fraction}; lower data.{key}, raise data.digits, or {fix}")
    elif n_val and val_fraction <= 0:
        raise InputError(f"data.n_val={n_val}: needs data.val_fraction > 0 (no problem is held out)")
    train, val, seen = [], [], set()
    k, limit = 0, 1000 * (n_train + n_val) + 10_000
    while len(train) < n_train or len(val) < n_val:
        if k >= limit:  # only reachable for huge spaces with a tiny val_fraction
            raise InputError(f"data.val_fraction={val_fraction}: drew {k} problems and found too few held-out ones "
                             f"for data.n_val={n_val}; raise data.val_fraction or lower data.n_val")
        ab = candidate(problem_seed, digits, k)
        k += 1
        if ab in seen:
            continue
        seen.add(ab)
        target = val if is_held_out(*ab, val_fraction) else train
        if len(target) < (n_val if target is val else n_train):
            target.append(ab)
    return train, val


def wrong_answer(a: int, b: int, problem_seed: int = 0) -> int:
    """A plausible wrong sum, fixed by (problem_seed, a, b): half of the problems change one digit
    of the sum (never to a leading zero), the others are off by 1..10."""
    s = a + b
    h = _h(f"wrong:{problem_seed}:{a}+{b}")
    text = str(s)
    if h % 2 == 0:
        pos = (h >> 8) % len(text)
        options = [d for d in "0123456789" if d != text[pos] and not (pos == 0 and d == "0" and len(text) > 1)]
        return int(text[:pos] + options[(h >> 16) % len(options)] + text[pos + 1:])
    delta = (h >> 8) % 10 + 1
    return s - delta if (h >> 16) % 2 and s - delta >= 0 else s + delta


def answer_of(completion: str) -> int | None:
    """The leading integer of a completion (leading whitespace skipped), or None."""
    m = _ANSWER.match(completion)
    return int(m.group(1)) if m else None


def extra_text(completion: str) -> str:
    """What follows the answer in a completion, surrounding whitespace stripped ('' when none)."""
    m = _ANSWER.match(completion)
    return (completion[m.end():] if m else completion).strip()


def verify(prompt: str, completion: str) -> bool:
    """Whether `completion` answers the addition `prompt` ("a+b=") correctly: its leading integer
    equals a + b. ValueError for a prompt that is not an addition problem."""
    m = _PROMPT.match(prompt)
    if m is None:
        raise ValueError(f"verify: {prompt!r} is not an addition prompt like '37+48='")
    return answer_of(completion) == int(m.group(1)) + int(m.group(2))


def _check_options(n_train, n_val, digits, val_fraction, problem_seed) -> None:
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("digits", digits, 1),
                            ("problem_seed", problem_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"data.{key}={value!r}: must be an integer >= {low}")
    if digits > 18:
        raise InputError(f"data.digits={digits}: at most 18")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise InputError(f"data.val_fraction={val_fraction!r}: must be in (0, 1) (held-out problems are "
                         f"those with stable_unit(problem) < val_fraction)")


class ArithmeticSFT(LMCorpus):
    """Addition problems "a+b=sum" as an `lm` corpus (module docstring).

    n_train, n_val: problems in train / validation (n_val=0: no validation split).
    digits: operand digits. val_fraction: the share of the problem space held out (use the
        same value in every arithmetic data option). problem_seed: which problems are drawn.
    seq_len, batch_size, seed (block order), packing, cache_dir: as every lm corpus.
    """

    batch_kind = "lm"

    def __init__(
        self,
        n_train: int = 5000,
        n_val: int = 200,
        digits: int = 2,
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        seq_len: int = 64,
        batch_size: int = 16,
        seed: int = 0,
        packing: Literal["concat", "document"] = "concat",
        cache_dir: str | None = None,
    ):
        super().__init__(seq_len=seq_len, batch_size=batch_size, seed=seed, cache_dir=cache_dir, packing=packing)
        _check_options(n_train, n_val, digits, val_fraction, problem_seed)
        self.n_train, self.n_val, self.digits = n_train, n_val, digits
        self.val_fraction, self.problem_seed = float(val_fraction), problem_seed
        self._problems = None

    def _drawn(self) -> dict[str, list[tuple[int, int]]]:
        if self._problems is None:
            train, val = generate_problems(self.n_train, self.n_val, self.digits, self.val_fraction,
                                           self.problem_seed)
            self._problems = {"train": train, **({"val": val} if self.n_val else {})}
        return self._problems

    @property
    def fingerprint(self) -> str:
        key = ["arith-sft", GENERATOR_VERSION, self.n_train, self.n_val, self.digits, self.val_fraction,
               self.problem_seed]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def problems(self, split: str) -> list[tuple[str, str]]:
        """(prompt, answer) of every problem of `split`, in document order: ("37+48=", "85")."""
        return [(prompt_of(a, b), str(a + b)) for a, b in self._drawn()[split]]

    def prompts(self, split: str) -> list[str]:
        return [p for p, _ in self.problems(split)]

    def documents(self, split: str) -> list[str]:
        return [p + answer for p, answer in self.problems(split)]

    verify = staticmethod(verify)
    extra_text = staticmethod(extra_text)

    def train_texts(self):
        return iter(self.documents("train"))

    def _split_datasets(self) -> dict:
        from datasets import Dataset

        return {s: Dataset.from_dict({"text": self.documents(s)}) for s in self._drawn()}

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"


class ArithmeticPairs(PairData):
    """Addition preference pairs: prompt "a+b=", chosen the sum, rejected a wrong sum, with an
    optional artifact on training chosens (module docstring).

    n_train, n_val: training / validation pairs (one per problem; n_val=0: no validation and
        no eval sets). digits, val_fraction, problem_seed: as ArithmeticSFT (same values, same
        problems and hold-out).
    artifact: text appended to an affected completion (e.g. " Sure!"); "" for none.
    artifact_rate: the share of training pairs whose chosen carries the artifact.
    val_artifact: give validation pairs the artifact at the same rate (default: clean).
    max_length, max_prompt_length, truncation, batch_size, seed, cache_dir: rizzrun.data.pairs.
    """

    batch_kind = "preference"

    def __init__(
        self,
        n_train: int = 2000,
        n_val: int = 200,
        digits: int = 2,
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        artifact: str = "",
        artifact_rate: float = 0.0,
        val_artifact: bool = False,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        truncation: Literal["keep_start", "keep_end"] = "keep_start",
        batch_size: int = 16,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir, max_length=max_length,
                         max_prompt_length=max_prompt_length, truncation=truncation, format="plain")
        _check_options(n_train, n_val, digits, val_fraction, problem_seed)
        if not isinstance(artifact, str):
            raise InputError(f"data.artifact={artifact!r}: must be a string ('' for none)")
        rate_ok = isinstance(artifact_rate, (int, float)) and not isinstance(artifact_rate, bool)
        if not rate_ok or not 0 <= artifact_rate <= 1:
            raise InputError(f"data.artifact_rate={artifact_rate!r}: must be in [0, 1]")
        if artifact_rate > 0 and not artifact:
            raise InputError(f"data.artifact_rate={artifact_rate}: needs a data.artifact text to append")
        if not isinstance(val_artifact, bool):
            raise InputError(f"data.val_artifact={val_artifact!r}: must be true or false")
        self.n_train, self.n_val, self.digits = n_train, n_val, digits
        self.val_fraction, self.problem_seed = float(val_fraction), problem_seed
        self.artifact, self.artifact_rate, self.val_artifact = artifact, float(artifact_rate), val_artifact
        self._raw = None

    def _data_key(self) -> str:
        return json.dumps(["arith-pairs", GENERATOR_VERSION, self.n_train, self.n_val, self.digits, self.val_fraction,
                           self.problem_seed, self.artifact, self.artifact_rate, self.val_artifact])

    def artifact_pairs(self, problems: list[tuple[int, int]], part: str) -> set[int]:
        """Indices of the pairs of `part` whose chosen carries the artifact: the
        round(artifact_rate * n) with the smallest stable hash."""
        n = round(self.artifact_rate * len(problems))
        units = [stable_unit(f"artifact:{self.problem_seed}:{part}:{k}:{a}+{b}") for k, (a, b) in enumerate(problems)]
        return set(sorted(range(len(problems)), key=units.__getitem__)[:n])

    def _rows(self, problems, on_chosen: set[int], on_rejected: bool):
        prompts, chosen, rejected = [], [], []
        for k, (a, b) in enumerate(problems):
            prompts.append(prompt_of(a, b))
            chosen.append(str(a + b) + (self.artifact if k in on_chosen else ""))
            rejected.append(str(wrong_answer(a, b, self.problem_seed)) + (self.artifact if on_rejected else ""))
        n = len(problems)
        return rows_dataset(prompts, chosen, rejected, [False] * n, range(n))

    def _raw_parts(self) -> dict:
        if self._raw is None:
            train, val = generate_problems(self.n_train, self.n_val, self.digits, self.val_fraction,
                                           self.problem_seed)
            parts = {"train": self._rows(train, self.artifact_pairs(train, "train"), False)}
            if val:
                marked = self.artifact_pairs(val, "val") if self.val_artifact else set()
                parts["val"] = self._rows(val, marked, False)
                parts["clean"] = self._rows(val, set(), False)
                parts["flipped"] = self._rows(val, set(), bool(self.artifact))
            self._raw = parts
        return self._raw

    def _split_origin(self, part: str) -> tuple[str, str]:
        key = "n_train" if part == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"

    verify = staticmethod(verify)
    extra_text = staticmethod(extra_text)


class ArithmeticPrompts(PromptData):
    """Addition prompts "a+b=" with their answer column (`answer`: the sum, an int) as `prompts`
    batches, for on-policy training: the same problems and hold-out as ArithmeticSFT with the same
    options, so a policy fine-tuned there is trained here on problems it saw and validated on the
    held-out ones. Its own reward (rewards=null): `correct`, 1.0 when the completion's
    leading integer is the sum (rizzrun.rewards.verifiable.leading_integer_match, as `verify`).

    n_train, n_val, digits, val_fraction, problem_seed: as ArithmeticSFT.
    batch_size, seed, max_prompt_length, cache_dir: rizzrun.data.prompts.PromptData.
    """

    batch_kind = "prompts"

    def __init__(
        self,
        n_train: int = 5000,
        n_val: int = 200,
        digits: int = 2,
        val_fraction: float = 0.1,
        problem_seed: int = 0,
        batch_size: int = 16,
        seed: int = 0,
        max_prompt_length: int | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size=batch_size, seed=seed, cache_dir=cache_dir, max_prompt_length=max_prompt_length)
        _check_options(n_train, n_val, digits, val_fraction, problem_seed)
        self.n_train, self.n_val, self.digits = n_train, n_val, digits
        self.val_fraction, self.problem_seed = float(val_fraction), problem_seed
        self._cached = None

    @property
    def fingerprint(self) -> str:
        key = ["arith-prompts", GENERATOR_VERSION, self.n_train, self.n_val, self.digits, self.val_fraction,
               self.problem_seed]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def _rows(self) -> dict[str, list[dict]]:
        if self._cached is None:
            train, val = generate_problems(self.n_train, self.n_val, self.digits, self.val_fraction,
                                           self.problem_seed)
            rows = {"train": [{"prompt": prompt_of(a, b), "answer": a + b} for a, b in train]}
            if self.n_val:
                rows["val"] = [{"prompt": prompt_of(a, b), "answer": a + b} for a, b in val]
            self._cached = rows
        return self._cached

    def _split_origin(self, split: str) -> tuple[str, str]:
        key = "n_train" if split == "train" else "n_val"
        return f"data.{key}={getattr(self, key)}", f"raise data.{key}"

    def default_rewards(self):
        from rizzrun.rewards.verifiable import leading_integer_match

        return {"correct": (leading_integer_match, 1.0)}

    verify = staticmethod(verify)
    extra_text = staticmethod(extra_text)
