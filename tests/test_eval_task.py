"""Evaluation of a verifiable task (rizzrun/eval/task.py): greedy answers to held-out prompts (or
another decoder's), checked by the data's verifier, against a scripted model whose answers are
known in advance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rizzrun.data.arithmetic import ArithmeticPairs, ArithmeticSFT, extra_text, verify
from rizzrun.eval.task import held_out_prompts, objective_metrics, task_accuracy
from rizzrun.tokenizers.byte import ByteTokenizer

TOK = ByteTokenizer()


class Bigram(torch.nn.Module):
    """Next token = table[last token]: greedy decoding writes a known script. After '=' it writes
    '5', then what `after_answer` says (EOS, or ' ok' and EOS)."""

    def __init__(self, after_answer: str = ""):
        super().__init__()
        V = TOK.vocab_size
        table = torch.full((V,), TOK.eos_id)
        script = "=5" + after_answer
        for a, b in zip(script, script[1:]):
            table[ord(a)] = ord(b)
        self.logits = torch.nn.Parameter(torch.nn.functional.one_hot(table, V).float() * 10)
        self.config = SimpleNamespace(max_seq_len=64)

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return SimpleNamespace(pos=0)

    def step(self, input_ids, cache, key_padding_mask=None):
        cache.pos += input_ids.shape[1]
        return self.logits[input_ids]


class Data:
    """Held-out prompts of known sums, checked by the arithmetic verifier."""

    verify = staticmethod(verify)
    extra_text = staticmethod(extra_text)

    def prompts(self, split):
        return ["2+3=", "1+1=", "4+1=", "0+5=", "9+9="]


def test_greedy_answers_are_checked_by_the_verifier():
    data = Data()
    got = task_accuracy(Bigram(), TOK, data, held_out_prompts(data, TOK, 5), max_new_tokens=4)
    assert got["n"] == 5 and got["correct_rate"] == pytest.approx(3 / 5)  # 2+3, 4+1, 0+5 are 5
    assert got["eos_rate"] == 1.0 and got["mean_new_tokens"] == 1.0 and got["extra_text_rate"] == 0.0
    assert [r["completion"] for r in got["examples"]] == ["5"] * 5


def test_text_after_the_answer_is_counted_not_judged():
    data = Data()
    got = task_accuracy(Bigram(" ok"), TOK, data, held_out_prompts(data, TOK, 3), max_new_tokens=8)
    assert got["correct_rate"] == pytest.approx(2 / 3) and got["extra_text_rate"] == 1.0
    assert got["mean_new_tokens"] == 4.0 and got["eos_rate"] == 1.0  # "5 ok" then EOS
    cut = task_accuracy(Bigram(" ok"), TOK, data, held_out_prompts(data, TOK, 3), max_new_tokens=2)
    assert cut["eos_rate"] == 0.0 and cut["mean_new_tokens"] == 2.0


def test_answers_come_from_the_decoder_given():
    """Greedy by default; a decoder given writes the answers, with max_new_tokens from the task
    (not the decoder's own). Sampling with top_k=1 is greedy; at temperature 10 the script's
    logits (10 on one of 259 ids) become 1 vs 0, so '5' follows '=' with p = e / (e + 258) = 0.01."""
    from rizzrun.decoders import Greedy, Sample

    data = Data()
    prompts = held_out_prompts(data, TOK, 5)
    greedy = task_accuracy(Bigram(" ok"), TOK, data, prompts, max_new_tokens=8)
    for decoder in (Greedy(max_new_tokens=1), Sample(top_k=1, seed=0)):
        assert task_accuracy(Bigram(" ok"), TOK, data, prompts, max_new_tokens=8, decoder=decoder) == greedy
    assert greedy["mean_new_tokens"] == 4.0
    hot = task_accuracy(Bigram(), TOK, data, prompts, max_new_tokens=4, decoder=Sample(temperature=10.0, seed=0))
    assert hot["correct_rate"] == 0.0 and hot["n"] == 5
    assert task_accuracy(Bigram(), TOK, data, prompts, max_new_tokens=4,
                         decoder=Sample(temperature=10.0, seed=0))["examples"] == hot["examples"]


def test_prompts_are_given_as_the_data_gives_them(tmp_path):
    """A corpus's prompt starts after an EOS, as its documents do; pairs give their own ids."""
    sft = ArithmeticSFT(n_train=20, n_val=5, seq_len=16, batch_size=4, seed=0, cache_dir=str(tmp_path))
    assert held_out_prompts(sft, TOK, 2) == [(p, [TOK.eos_id, *TOK.encode(p)]) for p in sft.prompts("val")[:2]]
    pairs = ArithmeticPairs(n_train=20, n_val=5, batch_size=4, seed=0, cache_dir=str(tmp_path))
    pairs.setup(TOK, cache_dir=str(tmp_path))
    batch = next(iter(pairs.val_batches()))
    ids = [row[mask].tolist() for row, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
    assert [i for _, i in held_out_prompts(pairs, TOK, 4)] == ids[:4]


def test_objective_metrics_average_by_the_count_the_objective_reports():
    """Two batches of 1 and 3 pairs: a per-pair mean is weighted by pairs, counts are summed."""
    batches = [{"row": torch.arange(1), "v": torch.tensor(1.0)}, {"row": torch.arange(3), "v": torch.tensor(0.0)}]

    class Objective:
        batch_kind = "preference"

        def evaluate(self, model, batch):
            n = batch["row"].shape[0]
            return batch["v"], {"rewards/accuracies": batch["v"], "pairs": torch.tensor(n)}

    got = objective_metrics(Objective(), torch.nn.Linear(1, 1), batches)
    assert got == {"loss": 0.25, "rewards/accuracies": 0.25, "pairs": 4.0}
