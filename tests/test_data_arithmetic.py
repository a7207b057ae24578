"""The built-in addition task (rizzrun.data.arithmetic): generator, verifier, one hold-out for every
data option, artifacts and eval sets of the pairs, the SFT corpus's packed stream."""

import hashlib
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from rizzrun.data.arithmetic import (  # noqa: E402
    ArithmeticPairs,
    ArithmeticSFT,
    answer_of,
    extra_text,
    generate_problems,
    verify,
    wrong_answer,
)
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.objectives.preference import check_preference_batch  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

EOS = ByteTokenizer.eos_id


def held(a, b, fraction):
    """Second formulation of the hold-out rule: sha256 of "a+b", first 8 bytes over 2**64."""
    return int(hashlib.sha256(f"{a}+{b}".encode()).hexdigest()[:16], 16) / 2**64 < fraction


def problem(prompt):
    a, b = prompt.rstrip("=").split("+")
    return int(a), int(b)


def test_generator_is_deterministic_distinct_and_split_by_the_problem_hash():
    train, val = generate_problems(300, 40, digits=2, val_fraction=0.1, problem_seed=3)
    assert (train, val) == generate_problems(300, 40, digits=2, val_fraction=0.1, problem_seed=3)
    assert generate_problems(300, 40, digits=2, val_fraction=0.1, problem_seed=4)[0] != train
    assert len(set(train)) == 300 and len(set(val)) == 40
    assert all(10 <= x <= 99 for ab in train + val for x in ab)
    assert not any(held(a, b, 0.1) for a, b in train) and all(held(a, b, 0.1) for a, b in val)
    # a longer set extends a shorter one: the first problems do not move
    assert generate_problems(100, 10, digits=2, val_fraction=0.1, problem_seed=3) == (train[:100], val[:10])
    three, _ = generate_problems(50, 0, digits=3, val_fraction=0.1)
    assert all(100 <= x <= 999 for ab in three for x in ab)
    with pytest.raises(InputError, match=r"data.n_val=50: only \d+ distinct 1-digit problems are held out"):
        generate_problems(10, 50, digits=1, val_fraction=0.1)


def test_verify_reads_the_leading_integer():
    assert answer_of("85") == 85 and answer_of(" 85 Sure!") == 85 and answer_of("Sure! 85") is None
    assert answer_of("") is None and answer_of("085") == 85
    assert verify("37+48=", "85") and verify("37+48=", "85 Sure!") and verify("37+48=", "85\n12+3=15")
    assert not verify("37+48=", "58") and not verify("37+48=", "8") and not verify("37+48=", "851")
    assert not verify("37+48=", "") and not verify("37+48=", "Sure! 85")
    assert extra_text("85 Sure!") == "Sure!" and extra_text("85") == "" and extra_text("x") == "x"
    with pytest.raises(ValueError, match="not an addition prompt"):
        verify("37*48=", "1776")


def test_wrong_answers_are_plausible_and_fixed():
    train, _ = generate_problems(500, 0, digits=2, val_fraction=0.1)
    kinds = set()
    for a, b in train:
        s, w = a + b, wrong_answer(a, b)
        assert w != s and w >= 0 and w == wrong_answer(a, b)
        one_digit = len(str(w)) == len(str(s)) and sum(x != y for x, y in zip(str(w), str(s))) == 1
        assert one_digit or abs(w - s) <= 10
        kinds.add("digit" if one_digit else "near")
    assert kinds == {"digit", "near"}


def test_sft_and_pairs_agree_on_what_is_held_out(tmp_path):
    cache = str(tmp_path / "cache")
    sft = ArithmeticSFT(n_train=400, n_val=30, cache_dir=cache)
    pairs = ArithmeticPairs(n_train=200, n_val=30, cache_dir=cache)
    pairs.setup(ByteTokenizer())
    sft_train = {problem(p) for p in sft.prompts("train")}
    sft_val = {problem(p) for p in sft.prompts("val")}
    pair_train = {problem(p) for p in pairs.prompts("train")}
    pair_val = {problem(p) for p in pairs.prompts("val")}
    assert not sft_train & pair_val and not pair_train & sft_val and not sft_train & sft_val
    assert sft_val == pair_val and pair_train <= sft_train  # the same draws, the pairs take fewer
    for name, fn in pairs.eval_sets().items():
        rows = [problem(p) for p in pairs.prompts(name)]
        assert set(rows) == pair_val, name
    assert sft.problems("val")[0] == (sft.prompts("val")[0], str(sum(problem(sft.prompts("val")[0]))))


def test_artifact_rates_and_eval_sets(tmp_path):
    data = ArithmeticPairs(n_train=50, n_val=12, artifact=" Sure!", artifact_rate=0.8, batch_size=5,
                           cache_dir=str(tmp_path / "cache"))
    data.setup(ByteTokenizer())
    train = data.pairs("train")
    assert sum(c.endswith(" Sure!") for _, c, _ in train) == 40  # exactly round(0.8 * 50)
    assert not any(r.endswith(" Sure!") for _, _, r in train)
    for split in ("train", "val", "clean", "flipped"):
        for p, c, r in data.pairs(split):
            assert verify(p, c) and not verify(p, r)
    assert not any("Sure" in c + r for _, c, r in data.pairs("val") + data.pairs("clean"))
    flipped = data.pairs("flipped")
    assert all(r.endswith(" Sure!") and "Sure" not in c for _, c, r in flipped)
    assert [p for p, _, _ in flipped] == data.prompts("val") == data.prompts("clean")
    # rows: train 0..49, val 50..61, then the eval sets in order
    sets = data.eval_sets()
    assert list(sets) == ["clean", "flipped"]
    rows = {name: [r for bt in fn() for r in bt["row"].tolist()] for name, fn in sets.items()}
    assert rows == {"clean": list(range(62, 74)), "flipped": list(range(74, 86))} and data.n_rows == 86
    for bt in sets["flipped"]():
        check_preference_batch(bt)
    again = ArithmeticPairs(n_train=50, n_val=12, artifact=" Sure!", artifact_rate=0.8, val_artifact=True,
                            cache_dir=str(tmp_path / "cache"))
    again.setup(ByteTokenizer())
    assert sum(c.endswith(" Sure!") for _, c, _ in again.pairs("val")) == round(0.8 * 12)
    assert again.pairs("train") == train
    with pytest.raises(InputError, match=r"data.artifact_rate=0.5: needs a data.artifact"):
        ArithmeticPairs(artifact_rate=0.5)


def test_pair_tokens_are_a_slice_of_the_sft_stream(tmp_path):
    cache = str(tmp_path / "cache")
    sft = ArithmeticSFT(n_train=6, n_val=3, seq_len=64, batch_size=1, cache_dir=cache)
    sft.setup(ByteTokenizer())
    docs = sft.documents("val")
    assert docs == [p + a for p, a in sft.problems("val")]
    (batch,) = list(sft.val_batches())  # one padded block: doc0 EOS doc1 EOS doc2
    stream = [*docs[0].encode(), EOS, *docs[1].encode(), EOS, *docs[2].encode()]
    n = len(stream) - 1
    assert batch["input_ids"][0, :n].tolist() == stream[:-1] and batch["labels"][0, :n].tolist() == stream[1:]
    assert (batch["labels"][0, n:] == -100).all()
    assert sft.stats["train"]["documents"] == 6 and sft.stats["val"]["bytes"] == sum(map(len, docs))
    pairs = ArithmeticPairs(n_train=4, n_val=3, cache_dir=cache)
    pairs.setup(ByteTokenizer())
    bt = next(pairs.val_batches())
    for k in range(3):
        prompt = bt["prompt_ids"][k][bt["prompt_mask"][k]].tolist()
        chosen = bt["chosen_ids"][k][bt["chosen_mask"][k]].tolist()
        assert prompt + chosen == [EOS, *docs[k].encode(), EOS]  # what the SFT model saw
