"""Memorization metrics against hand-computed values, and the eval path end to end."""

from __future__ import annotations

import json

import pytest
import torch

from rizzrun.eval.memorization import heldout_loss, lcs_length, memorization, rouge_l, token_match


def test_lcs_hand_computed():
    assert lcs_length([1, 2, 3, 4], [1, 3, 4]) == 3
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the CLRS textbook example: BCBA
    assert lcs_length([], [1]) == 0
    assert lcs_length([1, 2], [3, 4]) == 0


def test_rouge_l_hand_computed():
    # LCS([1,2,3,4,5], [1,3,5,7]) = 3 (1,3,5): P = 3/5, R = 3/4, F = 2·0.6·0.75/1.35 = 2/3
    assert rouge_l([1, 2, 3, 4, 5], [1, 3, 5, 7]) == pytest.approx(2 / 3)
    assert rouge_l([7, 8, 9], [7, 8, 9]) == 1.0
    assert rouge_l([1, 2], [3, 4]) == 0.0
    # order matters for a subsequence: reversed has LCS 1 -> P = R = 1/3
    assert rouge_l([1, 2, 3], [3, 2, 1]) == pytest.approx(1 / 3)


def test_token_match_hand_computed():
    assert token_match([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    with pytest.raises(ValueError, match="empty"):
        token_match([], [])


class Parrot(torch.nn.Module):
    """A 'model' that has memorized one token sequence: it predicts the token that followed the
    current one in `text`, and a fixed wrong token (0) for anything it has not seen."""

    def __init__(self, text: list[int], vocab: int, max_seq_len: int = 512):
        super().__init__()
        table = torch.zeros(vocab, dtype=torch.long)
        for a, b in zip(text, text[1:]):
            table[a] = b
        self.register_buffer("table", table)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"max_seq_len": max_seq_len})()

    def _logits(self, ids):
        return torch.nn.functional.one_hot(self.table[ids], self.table.numel()).float() * 10

    def forward(self, ids, key_padding_mask=None):
        return self._logits(ids)

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return {"pos": 0}

    def step(self, ids, cache, key_padding_mask=None):
        cache["pos"] += ids.shape[1]
        return self._logits(ids)


class Bytes:
    eos_id = 300

    def encode(self, text):
        return list(text.encode())


def test_memorization_counts_a_memorized_and_an_unseen_document():
    tok = Bytes()
    seen = "abcdefghijklmnopqrstuvwxyz0123456789"  # every byte distinct: the parrot recalls it exactly
    unseen = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"
    model = Parrot(tok.encode(seen), vocab=301)
    out = memorization(model, tok, [seen, unseen, "short"], prefix_len=8, continuation_len=16)
    assert out["documents"] == 2 and out["skipped_short"] == 1
    assert out["exact_matches"] == 1 and out["exact_match_rate"] == 0.5
    first, second = out["rows"]
    assert first == {"exact": True, "token_match": 1.0, "rougeL": 1.0}
    assert second["exact"] is False and second["token_match"] == 0.0  # predicts 0 every time
    assert out["rougeL"] == pytest.approx(0.5)


def test_memorization_decodes_with_the_decoder_it_is_given():
    """The metric is greedy's by default; a decoder given is the one used, for exactly
    continuation_len tokens. Sampling with top_k=1 is greedy (the same rows); at temperature 5 the
    parrot's logits (10 on the right token, 0 on 300 others) become 2 vs 0, so each token is right
    with p = e^2 / (e^2 + 300) = 0.024: the memorized document is no longer extracted."""
    from rizzrun.decoders import Greedy, Sample

    tok = Bytes()
    seen = "abcdefghijklmnopqrstuvwxyz0123456789"
    model = Parrot(tok.encode(seen), vocab=301)
    greedy = memorization(model, tok, [seen], prefix_len=8, continuation_len=16)
    assert greedy["rows"] == [{"exact": True, "token_match": 1.0, "rougeL": 1.0}]
    assert memorization(model, tok, [seen], 8, 16, decoder=Greedy(max_new_tokens=1))["rows"] == greedy["rows"]
    assert memorization(model, tok, [seen], 8, 16, decoder=Sample(top_k=1, seed=0))["rows"] == greedy["rows"]
    hot = memorization(model, tok, [seen], 8, 16, decoder=Sample(temperature=5.0, seed=0))
    assert hot["exact_matches"] == 0 and hot["token_match"] < 0.25
    assert memorization(model, tok, [seen], 8, 16, decoder=Sample(temperature=5.0, seed=0))["rows"] == hot["rows"]


def test_the_eval_decoder_by_default_is_plain_greedy():
    """What eval decodes with unless told otherwise: conf/decoder/greedy.yaml, which is argmax with
    no repetition penalty and no minimum length (the metric's definition), continuation_len tokens."""
    from rizzrun.decoders import Greedy
    from rizzrun.runner.build import build_decoder
    from rizzrun.runner.evaluate import eval_decoder_node

    node = eval_decoder_node(None, 8)
    assert node == {"_target_": "rizzrun.decoders.greedy.Greedy", "max_new_tokens": 8, "repetition_penalty": 1.0,
                    "min_new_tokens": 0, "compile": False}
    built = build_decoder(node)
    assert type(built) is Greedy and built.settings() == Greedy(max_new_tokens=8).settings()
    assert eval_decoder_node({"_target_": "rizzrun.decoders.sample.Sample", "seed": 3, "max_new_tokens": 1}, 5) == {
        "_target_": "rizzrun.decoders.sample.Sample", "seed": 3, "max_new_tokens": 5}


def test_memorization_rejects_a_window_longer_than_the_model():
    with pytest.raises(ValueError, match="max_seq_len=16"):
        memorization(Parrot([1, 2], 301, max_seq_len=16), Bytes(), ["x" * 40], prefix_len=8, continuation_len=8)


def test_heldout_loss_is_token_weighted():
    model = Parrot([1, 2, 3], vocab=5)
    # labels that the parrot predicts (logit 10 on one of 5 tokens) vs ones it does not
    right = {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([[2, 3]])}
    wrong = {"input_ids": torch.tensor([[1, 2, 1, 2]]), "labels": torch.tensor([[4, 4, 4, 4]])}
    good, bad = 10 - torch.logsumexp(torch.tensor([10.0, 0, 0, 0, 0]), 0), torch.logsumexp(torch.tensor([10.0, 0, 0, 0, 0]), 0)
    expected = (2 * float(-good) + 4 * float(bad)) / 6
    out = heldout_loss(model, [right, wrong])
    assert out["tokens"] == 6 and out["loss"] == pytest.approx(expected, rel=1e-6)


def test_eval_at_end_and_rizzrun_eval_agree(tmp_path, shared_cache):
    from rizzrun.config import compose
    from rizzrun.runner.evaluate import evaluate_run
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    from test_runner import SMALL

    cfg = compose([*SMALL, f"cache_dir={shared_cache}", "trainer.max_steps=3", "trainer.val_every=3",
                   "data.max_train_docs=5", "eval.at_end=true", "eval.prefix_len=8", "eval.continuation_len=8"])
    summary = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["memorization"]["documents"] == 5 == summary["eval"]["documents"]
    # eval.at_end decodes greedily, and says so
    assert saved["decoder"] == {"_target_": "rizzrun.decoders.greedy.Greedy", "max_new_tokens": 8,
                                "repetition_penalty": 1.0, "min_new_tokens": 0, "compile": False}
    logged = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "mem/rougeL" in r]
    assert len(logged) == 1 and logged[0]["step"] == 3
    assert logged[0]["eval/val_loss"] == pytest.approx(saved["val"]["loss"])
    again = evaluate_run(tmp_path / "run")  # from the folder, the same numbers
    assert again["memorization"]["rows"] == saved["memorization"]["rows"]
    assert (again["decoder"], again["decoder_option"]) == (saved["decoder"], "greedy")
    assert again["val"]["loss"] == pytest.approx(saved["val"]["loss"], rel=1e-6)
    other = evaluate_run(tmp_path / "run", documents="val", max_documents=3)
    assert other["documents"] == "val" and other["memorization"]["documents"] <= 3
    # both evaluations went to the run's metrics too, at the checkpoint's step, under their own names
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/val_loss" in r]
    assert [sorted(k for k in r if k.startswith("mem")) for r in rows] == [
        ["mem/exact_match_rate", "mem/rougeL", "mem/token_match"]] * 2 + [
        ["mem_val/exact_match_rate", "mem_val/rougeL", "mem_val/token_match"]]
    assert {r["step"] for r in rows} == {3}
    assert rows[-1]["mem_val/rougeL"] == pytest.approx(other["memorization"]["rougeL"])

    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("rizzrun"))
    done = subprocess.run([exe, "eval", str(tmp_path / "run"), "--prefix-len", "8", "--continuation-len", "8"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"exact match {saved['memorization']['exact_match_rate']:.3f}" in done.stdout
    bad = subprocess.run([exe, "eval", str(tmp_path / "run"), "--documents", str(tmp_path / "nope.jsonl")],
                         capture_output=True, text=True)
    assert (bad.returncode, bad.stderr) == (2, f"error: --documents {tmp_path / 'nope.jsonl'}: no such file; allowed: "
                                               "train, val, or a .jsonl/.txt file\n")
    # a window longer than the model's context (max_seq_len=256 for model.size=tiny), named as typed
    long = subprocess.run([exe, "eval", str(tmp_path / "run"), "--prefix-len", "200", "--continuation-len", "57"],
                          capture_output=True, text=True)
    assert (long.returncode, long.stderr) == (2, "error: --prefix-len 200 + --continuation-len 57 = 257: longer than "
                                                 "the model's max_seq_len=256; allowed: prefix_len + continuation_len "
                                                 "<= 256\n")


def test_rizzrun_eval_logs_to_the_runs_wandb_run(tmp_path, shared_cache):
    import time

    from rizzrun.config import compose
    from rizzrun.runner.evaluate import evaluate_run
    from rizzrun.runner.train import run

    from test_runner import SMALL

    cfg = compose([*SMALL, f"cache_dir={shared_cache}", "logger=wandb", "trainer.max_steps=2", "trainer.val_every=2",
                   "eval.prefix_len=8", "eval.continuation_len=8"])
    run(cfg, tmp_path / "run")
    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    time.sleep(1.1)  # W&B names offline folders by the second
    evaluate_run(tmp_path / "run")
    offline = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)
