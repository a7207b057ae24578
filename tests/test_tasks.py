"""The built-in string tasks (rizzrun.data.tasks: sort, reverse, count): generator, answers checked
by a second computation, one hold-out for TaskSFT and TaskPrompts, verify against the rewards
(rizzrun.rewards.tasks.char_accuracy, exact_match), PromptData's behaviour through TaskPrompts,
option errors and the config rules."""

import hashlib
import os
from collections import Counter
from itertools import product

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from rizzrun.data.tasks import (  # noqa: E402
    TASKS,
    TaskPrompts,
    TaskSFT,
    corrupt,
    generate_problems,
    parse,
    solve,
    verify,
)
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.rewards.tasks import char_accuracy, char_matches  # noqa: E402
from rizzrun.rewards.verifiable import exact_match  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
EOS = ByteTokenizer.eos_id


def held(prompt, fraction):
    """Second formulation of the hold-out rule: sha256 of the prompt, first 8 bytes over 2**64."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:16], 16) / 2**64 < fraction


def split_prompt(prompt):
    """(task, char or None, text) read by hand, not by the module's regular expressions."""
    head, _, rest = prompt.partition(":")
    assert rest.endswith("=")
    text = rest[:-1]
    if head.startswith("count "):
        return "count", head[len("count "):], text
    return {"sort": "sort", "rev": "reverse"}[head], None, text


def by_hand(prompt):
    task, char, text = split_prompt(prompt)
    if task == "sort":
        return "".join(sorted(text))
    if task == "reverse":
        return "".join(reversed(text))
    return str(Counter(text)[char])


@pytest.mark.parametrize("task", TASKS)
def test_problems_are_deterministic_distinct_held_out_by_the_prompt_hash_and_answered(task):
    train, val = generate_problems(task, 300, 30, length=4, alphabet="abcdef", val_fraction=0.1, problem_seed=3)
    assert (train, val) == generate_problems(task, 300, 30, length=4, alphabet="abcdef", val_fraction=0.1,
                                             problem_seed=3)
    assert generate_problems(task, 300, 30, length=4, alphabet="abcdef", val_fraction=0.1, problem_seed=4)[0] != train
    prompts = [p for p, _ in train + val]
    assert len(set(prompts)) == 330 and len(train) == 300 and len(val) == 30
    assert not any(held(p, 0.1) for p, _ in train) and all(held(p, 0.1) for p, _ in val)
    for p, answer in train + val:
        kind, char, text = split_prompt(p)
        assert kind == task and len(text) == 4 and set(text) <= set("abcdef")
        assert char is None if task != "count" else char in "abcdef"
        assert answer == by_hand(p) == solve(p)
        assert verify(p, answer) and verify(p, f" {answer}\n")
    # a longer set extends a shorter one: the first problems do not move
    assert generate_problems(task, 100, 10, length=4, alphabet="abcdef", val_fraction=0.1,
                             problem_seed=3) == (train[:100], val[:10])
    # every character of the alphabet turns up, and count asks for absent characters too
    assert set("".join(split_prompt(p)[2] for p in prompts)) == set("abcdef")
    if task == "count":
        assert {"0", "1", "2"} <= {a for _, a in train}


def test_examples_of_the_documented_formats():
    assert solve("sort:dbca=") == "abcd" and solve("rev:abcd=") == "dcba" and solve("count a:abaca=") == "3"
    assert parse("count a:abaca=") == ("count", "abaca", "a") and parse(" rev:ab= ") == ("reverse", "ab", None)
    for bad in ("sort:ab", "sort:a b=", "reverse:ab=", "count ab:abc=", "rev:=", "", "37+48="):
        with pytest.raises(ValueError, match="not a task prompt like 'sort:dbca='"):
            solve(bad)


def test_a_small_space_is_counted_and_too_many_problems_are_an_error():
    space = ["".join(c) for c in product("abcd", repeat=3)]
    n_held = sum(held(f"rev:{s}=", 0.2) for s in space)
    train, val = generate_problems("reverse", 64 - n_held, n_held, length=3, alphabet="abcd", val_fraction=0.2)
    assert sorted(p for p, _ in train + val) == sorted(f"rev:{s}=" for s in space)  # the whole space, once
    with pytest.raises(InputError, match=rf"^data.n_val={n_held + 1}: only {n_held} distinct 'reverse' problems of "
                                         rf"length 3 are held out with data.val_fraction=0.2; .*raise "
                                         rf"data.val_fraction$"):
        generate_problems("reverse", 1, n_held + 1, length=3, alphabet="abcd", val_fraction=0.2)
    with pytest.raises(InputError, match=r"^data.n_train=10: with data.n_val=0 needs 10 distinct problems; task "
                                         r"'sort' with 2 characters and length 2 has only 4; "):
        TaskSFT(task="sort", n_train=10, n_val=0, length=2, alphabet="ab").problems("train")
    # count also draws the character: 2 ** 3 problems of length 2 over "ab"
    with pytest.raises(InputError, match="has only 8"):
        generate_problems("count", 9, 0, length=2, alphabet="ab")


@pytest.mark.parametrize("kw, key, why", [
    ({"task": "sortt"}, "task", "allowed: sort, reverse, count"),
    ({"alphabet": "ab c"}, "alphabet", "' '; every character must be printable"),
    ({"alphabet": "a=b"}, "alphabet", "'='"),
    ({"alphabet": "aba"}, "alphabet", "repeats 'a'"),
    ({"alphabet": ""}, "alphabet", "non-empty string"),
    ({"length": 0}, "length", "integer >= 1"),
    ({"n_train": True}, "n_train", "integer >= 1"),
    ({"n_val": -1}, "n_val", "integer >= 0"),
    ({"val_fraction": 1.0}, "val_fraction", r"must be in \(0, 1\)"),
    ({"problem_seed": -2}, "problem_seed", "integer >= 0"),
    ({"batch_size": 0}, "batch_size", "integer >= 1"),
])
def test_bad_options_are_one_line_errors_naming_the_key(kw, key, why):
    for cls in (TaskSFT, TaskPrompts):
        with pytest.raises(InputError, match=rf"^data.{key}=.*{why}") as info:
            cls(**kw)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"^data.packing='x': allowed: concat, document$"):
        TaskSFT(packing="x")
    with pytest.raises(InputError, match=r"^data.max_prompt_length=0: must be an integer >= 1 or null$"):
        TaskPrompts(max_prompt_length=0)


@pytest.mark.parametrize("task", TASKS)
def test_sft_and_prompts_share_problems_and_hold_out(tmp_path, task):
    opts = dict(task=task, n_val=12, length=4, alphabet="abcdef", val_fraction=0.2, problem_seed=1)
    sft = TaskSFT(n_train=40, cache_dir=str(tmp_path), **opts)
    prompts = TaskPrompts(n_train=25, **opts)
    assert prompts.problems("val") == sft.problems("val") and prompts.problems("train") == sft.problems("train")[:25]
    assert not set(sft.prompts("train")) & set(sft.prompts("val"))
    assert sft.documents("val") == [p + a for p, a in sft.problems("val")]
    assert sft.fingerprint != TaskSFT(n_train=40, **{**opts, "problem_seed": 2}).fingerprint
    assert prompts.fingerprint != TaskPrompts(n_train=25, **{**opts, "alphabet": "abcdeg"}).fingerprint
    # no validation split with n_val=0
    assert "val" not in TaskPrompts(n_train=5, **{**opts, "n_val": 0})._rows()


def test_the_sft_stream_is_what_the_prompts_continue(tmp_path):
    sft = TaskSFT(task="reverse", n_train=6, n_val=3, length=6, seq_len=64, batch_size=1, cache_dir=str(tmp_path))
    sft.setup(ByteTokenizer())
    docs = sft.documents("val")
    (batch,) = list(sft.val_batches())  # one padded block: doc0 EOS doc1 EOS doc2
    stream = [*docs[0].encode(), EOS, *docs[1].encode(), EOS, *docs[2].encode()]
    n = len(stream) - 1
    assert batch["input_ids"][0, :n].tolist() == stream[:-1] and batch["labels"][0, :n].tolist() == stream[1:]
    assert list(sft.train_texts()) == sft.documents("train")
    data = TaskPrompts(task="reverse", n_train=6, n_val=3, length=6, batch_size=3)
    data.setup(ByteTokenizer())
    ids = data.prompt_token_ids("val")
    for k, (p, a) in enumerate(data.problems("val")):
        assert ids[k] == [EOS, *p.encode()]  # then the SFT model continues with answer + EOS
        assert [EOS, *(p + a).encode(), EOS] == [EOS, *docs[k].encode(), EOS]
        assert len(a) == 6 and a == p[len("rev:"):-1][::-1]


def test_verify_and_the_rewards_agree():
    # by hand: prompt "rev:fedcba=", answer "abcdef" (distinct letters: no chance matches)
    data = TaskPrompts(task="reverse", length=6)
    prompt, answer = "rev:fedcba=", "abcdef"
    cases = {"abcdef": 1.0, "  abcdef\n": 1.0, "abXdef": 5 / 6, "abcde": 5 / 6, "abcdefx": 6 / 7, "bcdef": 0.0,
             "": 0.0, "  ": 0.0, "abc def": 3 / 7, "abcdef abcdef": 6 / 13, "fedcba": 0.0, "ABCDEF": 0.0}
    completions = list(cases)
    prompts, columns = [prompt] * len(cases), {"answer": [answer] * len(cases)}
    chars = char_accuracy(prompts, completions, **columns)
    exact = exact_match(prompts, completions, **columns)
    for c, want, got, e in zip(completions, cases.values(), chars, exact):
        assert got == pytest.approx(want), c
        ok = data.verify(prompt, c)
        assert ok == verify(prompt, c) == (e == 1.0) == (got == 1.0), c
    assert char_accuracy(["p"], ["abc"], answer=[None]) == [None]
    assert char_matches("", "") == 1.0
    with pytest.raises(ValueError, match="char_accuracy needs the data's `answer` column"):
        char_accuracy(prompts, completions)
    rewards = data.default_rewards()
    assert list(rewards) == ["correct"] and rewards["correct"] == (exact_match, 1.0)
    # every task: the default reward agrees with verify on right, wrong and malformed completions
    for task in TASKS:
        data = TaskPrompts(task=task, n_train=30, n_val=5, length=3, alphabet="abcd", val_fraction=0.3)
        data.setup(ByteTokenizer())
        rows = list(range(35))
        prompts, columns = data.columns(rows)
        for shift in (lambda a: a, lambda a: a[::-1] + "c", lambda a: "", lambda a: a + " ok", lambda a: str(len(a))):
            completions = [shift(a) for a in columns["answer"]]
            scores = data.default_rewards()["correct"][0](prompts, completions, **columns)
            assert scores == [float(data.verify(p, c)) for p, c in zip(prompts, completions)]
        with pytest.raises(ValueError, match=rf"is a '(sort|reverse|count)' prompt; this data's task is '{task}'"):
            data.verify({"sort": "rev:ab=", "reverse": "count a:ab=", "count": "sort:ba="}[task], "ab")
        with pytest.raises(ValueError, match="is not a task prompt"):
            data.verify("37+48=", "85")


@pytest.mark.parametrize("task", TASKS)
def test_noisy_demonstrations_corrupt_exactly_the_share_asked(task):
    opts = dict(task=task, n_train=50, n_val=10, length=6, alphabet="abcdefgh", problem_seed=2)
    clean, noisy = TaskSFT(**opts), TaskSFT(noise=0.3, **opts)
    assert clean.noisy() == set() and len(noisy.noisy()) == 15  # round(0.3 * 50)
    assert noisy.problems("train") == clean.problems("train") and noisy.documents("val") == clean.documents("val")
    for k, (p, answer) in enumerate(clean.problems("train")):
        doc = noisy.documents("train")[k]
        assert doc.startswith(p)
        given = doc[len(p):]
        assert verify(p, given) == (k not in noisy.noisy()), k
        if k in noisy.noisy():
            if task == "count":
                assert abs(int(given) - int(answer)) == 1 and int(given) >= 0
            else:  # one character replaced by another of the alphabet
                assert len(given) == 6 and sum(x != y for x, y in zip(given, answer)) == 1
                assert set(given) <= set("abcdefgh")
    # the noisy rows are the ones with the smallest hash (a second formulation of the rule)
    units = {k: int(hashlib.sha256(f"noise:2:{p}".encode()).hexdigest()[:16], 16) for k, p in
             enumerate(clean.prompts("train"))}
    assert noisy.noisy() == set(sorted(units, key=units.get)[:15])
    assert noisy.fingerprint != clean.fingerprint and TaskSFT(noise=0.0, **opts).fingerprint == clean.fingerprint
    assert corrupt("count a:bbb=", "0", "ab") == "1"
    with pytest.raises(InputError, match=r"^data.noise=1.5: must be in \[0, 1\]"):
        TaskSFT(noise=1.5)
    with pytest.raises(InputError, match=r"^data.noise=0.5: corrupting an answer needs an alphabet of 2 or more"):
        TaskSFT(task="reverse", alphabet="a", n_train=1, n_val=0, noise=0.5)


def test_extra_text():
    sort = TaskSFT(task="sort", length=4)
    assert sort.extra_text(" abcd Sure!") == "Sure!" and sort.extra_text("abcd") == "" and sort.extra_text("ab") == ""
    count = TaskPrompts(task="count")
    assert count.extra_text("12 apples") == "apples" and count.extra_text("x") == "x" and count.extra_text("3") == ""


def test_prompt_batches_through_task_prompts():
    data = TaskPrompts(task="count", n_train=10, n_val=5, length=3, alphabet="abcd", val_fraction=0.3, batch_size=4,
                       seed=7)
    data.setup(ByteTokenizer())
    train, val = data.problems("train"), data.problems("val")
    # rows: train 0..9, then val 10..14; val batches in row order, the last smaller
    assert list(data.split_rows("train")) == list(range(10)) and list(data.split_rows("val")) == list(range(10, 15))
    vb = list(data.val_batches())
    assert [b["row"].tolist() for b in vb] == [[10, 11, 12, 13], [14]]
    # columns(rows) gives the answers of the given rows, in the given order
    rows = [12, 3, 3, 0]
    prompts, columns = data.columns(rows)
    both = train + val
    assert prompts == [both[r][0] for r in rows] and columns == {"answer": [both[r][1] for r in rows]}
    with pytest.raises(IndexError, match="row 15 is outside"):
        data.columns([15])
    # left padding: every prompt is EOS + its bytes, right-aligned; here all prompts are as long
    b = next(data.train_batches())
    for ids, mask, r in zip(b["prompt_ids"], b["prompt_mask"], b["row"]):
        assert ids[mask].tolist() == [EOS, *both[int(r)][0].encode()]
    # batches per epoch: 10 // 4 = 2; an epoch permutes the rows with (seed, epoch); resume is exact
    stream = data.train_batches()
    first = [next(stream) for _ in range(6)]
    for e in range(3):
        seen = torch.cat([first[2 * e]["row"], first[2 * e + 1]["row"]]).tolist()
        order = data.epoch_order(e).tolist()
        assert seen == order[:8] and len(set(seen)) == 8
    assert data.epoch_order(0).tolist() != data.epoch_order(1).tolist()
    for i in range(6):
        again = next(data.train_batches(start=i))
        assert all(torch.equal(again[k], first[i][k]) for k in first[i])
    other = TaskPrompts(task="count", n_train=10, n_val=5, length=3, alphabet="abcd", val_fraction=0.3, batch_size=4,
                        seed=8)
    other.setup(ByteTokenizer())
    assert other.epoch_order(0).tolist() != data.epoch_order(0).tolist()


def test_max_prompt_length_keeps_the_last_tokens():
    data = TaskPrompts(task="sort", n_train=3, n_val=0, length=4, max_prompt_length=6, batch_size=3)
    data.setup(ByteTokenizer())
    for r, ids in enumerate(data.prompt_token_ids("train")):
        full = [EOS, *data.prompts("train")[r].encode()]
        assert len(full) == 11 and ids == full[-6:]
    assert data.stats["train"]["truncated"] == 3 and data.stats["train"]["tokens"] == 18


def test_config_files_and_rules():
    import inspect

    from omegaconf import OmegaConf

    from rizzrun.config import ConfigError, load
    from rizzrun.data import tasks_spec
    from rizzrun.paths import conf_dir

    cfg = load(["data=task_sft", "data.task=reverse", "data.length=6"])
    assert cfg.data._target_ == "rizzrun.data.tasks.TaskSFT" and cfg.data.task == "reverse"
    for name, cls in (("task_sft", TaskSFT), ("task_prompts", TaskPrompts)):
        node = OmegaConf.to_container(OmegaConf.load(conf_dir() / "data" / f"{name}.yaml"))
        assert node.pop("_target_") == f"rizzrun.data.tasks.{cls.__name__}"
        node.update(seed=0, cache_dir=None)
        data = cls(**node)  # every key is an argument; the defaults match the signature's
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert node == defaults
        assert data.task == "sort"
    with pytest.raises(ConfigError) as info:
        load(["data=task_sft", "data.length=2", "data.alphabet=ab"])
    assert info.value.problems == [
        "data.n_train=5000: with data.n_val=200 needs 5200 distinct problems; task 'sort' with 2 characters and "
        "length 2 has only 4; lower them, or raise data.length or give data.alphabet more characters"]
    with pytest.raises(ConfigError) as info:
        load(["data=task_sft", "data.alphabet='a b'"])
    assert info.value.problems == [
        "data.alphabet='a b': holds ' '; every character must be printable and none may be whitespace, ':' or '=' "
        "(the prompt format's separators)"]
    assert tasks_spec.check({"task": "count", "alphabet": "ab", "length": 2, "n_train": 8, "n_val": 0}, "data") == []
    assert len(tasks_spec.check({"task": "count", "alphabet": "ab", "length": 2, "n_train": 8, "n_val": 1}, "d")) == 1
    assert tasks_spec.RANGES["TaskPrompts"]["val_fraction"] == ((">", 0), ("<", 1))
