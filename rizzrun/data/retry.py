"""Addition with a correction template: the SFT corpus that makes a second attempt possible for
SCoRe (Kumar et al., arXiv:2409.12917; spec shared/methods/objectives/score.md, "tiny scale").

`data=arithmetic_retry_sft` (an `lm` corpus, packing concat only): for each problem (a, b) of
ArithmeticSFT's problem set (same problems and hold-out), with probability retry_rate (a stable
hash of the problem) two consecutive documents

    "a+b=c'"      and      "<instruction>a+b=c"         (c' = rizzrun.data.arithmetic.wrong_answer)

which the packed stream joins with EOS into  EOS a+b=c' EOS <instruction>a+b=c EOS: exactly the
objective's turn-2 prompt x_2 = x_1 ++ y_1 ++ EOS ++ instruction ++ restated problem (SCoRe's
rollout, restate_prompt=true) followed by the corrected sum; otherwise the plain "a+b=c". The
first attempts are wrong_answer's plausible wrong sums (one changed digit or off by 1..10), not
the model's own samples, so the corpus stays a pure function of its options. A wrong first
attempt is also a training target, so a model SFT'd here answers the first turn wrongly more
often than one trained on plain sums; the second turn always sees a correction of a wrong sum,
so the SFT model tends to change its answer at turn 2 even when it was right (negative
Δ(t1, t2) at the start, as the paper's base models).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from rizzrun.data.arithmetic import GENERATOR_VERSION, ArithmeticSFT, wrong_answer
from rizzrun.data.lm import stable_unit
from rizzrun.errors import InputError

__all__ = ["ArithmeticRetrySFT", "retry_documents"]


def retry_documents(problems: list[tuple[int, int]], retry_rate: float, instruction: str,
                    problem_seed: int = 0, keep_rate: float = 0.0) -> list[str]:
    """The documents of `problems` in order (module docstring): with u = stable_unit("retry:<problem_seed>:
    a+b"), a correction pair when u < retry_rate, a kept pair ("a+b=c", "<instruction>a+b=c": a right
    first attempt repeated) when retry_rate <= u < retry_rate + keep_rate, else the plain sum."""
    docs = []
    for a, b in problems:
        u = stable_unit(f"retry:{problem_seed}:{a}+{b}")
        if u < retry_rate:
            docs += [f"{a}+{b}={wrong_answer(a, b, problem_seed)}", f"{instruction}{a}+{b}={a + b}"]
        elif u < retry_rate + keep_rate:
            docs += [f"{a}+{b}={a + b}", f"{instruction}{a}+{b}={a + b}"]
        else:
            docs.append(f"{a}+{b}={a + b}")
    return docs


class ArithmeticRetrySFT(ArithmeticSFT):
    """ArithmeticSFT with correction documents (module docstring).

    retry_rate: the share of problems written as a wrong first attempt and its correction.
    keep_rate: the share written as a right first attempt, the instruction and the same sum again
        (0: none, the corpus of the repro; > 0 gives the second turn a "keep" mode, as base models
        that often repeat their first answer have; retry_rate + keep_rate <= 1).
    instruction: the text between the first attempt's EOS and the restated problem; must equal the
        objective's `instruction` (SCoRe: objective.instruction).
    n_train, n_val, digits, val_fraction, problem_seed, seq_len, batch_size, seed, cache_dir: as
    ArithmeticSFT; packing must be "concat" (a correction pair is two documents in a row).
    """

    def __init__(self, retry_rate: float = 0.5, instruction: str = " retry:", keep_rate: float = 0.0, n_train: int = 5000, n_val: int = 200,
                 digits: int = 2, val_fraction: float = 0.1, problem_seed: int = 0, seq_len: int = 64,
                 batch_size: int = 16, seed: int = 0, packing: Literal["concat"] = "concat",
                 cache_dir: str | None = None):
        if packing != "concat":
            raise InputError(f"data.packing={packing!r}: arithmetic_retry_sft needs concat (a correction is two "
                             "documents joined by EOS)")
        super().__init__(n_train=n_train, n_val=n_val, digits=digits, val_fraction=val_fraction,
                         problem_seed=problem_seed, seq_len=seq_len, batch_size=batch_size, seed=seed,
                         packing=packing, cache_dir=cache_dir)
        ok = isinstance(retry_rate, (int, float)) and not isinstance(retry_rate, bool)
        if not ok or not 0 <= retry_rate <= 1:
            raise InputError(f"data.retry_rate={retry_rate!r}: must be in [0, 1]")
        ok = isinstance(keep_rate, (int, float)) and not isinstance(keep_rate, bool)
        if not ok or not 0 <= keep_rate <= 1 - retry_rate:
            raise InputError(f"data.keep_rate={keep_rate!r}: must be in [0, 1 - data.retry_rate] = [0, {1 - retry_rate:g}]")
        self.keep_rate = float(keep_rate)
        if not isinstance(instruction, str) or not instruction:
            raise InputError(f"data.instruction={instruction!r}: must be a non-empty string (e.g. ' retry:')")
        self.retry_rate, self.instruction = float(retry_rate), instruction

    @property
    def fingerprint(self) -> str:
        key = ["arith-retry-sft", GENERATOR_VERSION, self.n_train, self.n_val, self.digits, self.val_fraction,
               self.problem_seed, self.retry_rate, self.instruction, *([self.keep_rate] if self.keep_rate else [])]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def documents(self, split: str) -> list[str]:
        if split != "train":  # held-out problems stay plain: validation loss and eval prompts as ArithmeticSFT
            return super().documents(split)
        return retry_documents(self._drawn()[split], self.retry_rate, self.instruction, self.problem_seed,
                               self.keep_rate)
