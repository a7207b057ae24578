"""Preference pairs (data=preference, rizzrun.data.pairs): sources, fields, chat templates against
TRL, truncation by hand, filters, bad rows, resumable order, row ids, the tokenization cache."""

import hashlib
import itertools
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rizzrun.data.preference import PreferencePairs  # noqa: E402
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.objectives.preference import check_preference_batch, pair_sequences  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

EOS = ByteTokenizer.eos_id
ROWS = [
    {"prompt": "Q: 2+2?", "chosen": "4", "rejected": "five"},
    {"prompt": "Name a color.", "chosen": "red", "rejected": "dog"},
    {"prompt": "Say hi", "chosen": "hi", "rejected": "bye now"},
]


def b(text):
    return list(text.encode())


def unit(key):
    """Second formulation of the hold-out hash: first 8 bytes of sha256, big-endian, over 2**64."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make(path, tmp_path, **kw):
    kw.setdefault("val_fraction", 0)
    kw.setdefault("batch_size", 8)
    data = PreferencePairs(str(path) if not isinstance(path, list) else path, cache_dir=str(tmp_path / "cache"), **kw)
    return data


def real(ids, mask):
    return [r[: int(m.sum())] for r, m in zip(ids.tolist(), mask)]


def contents(batch):
    return {part: real(batch[f"{part}_ids"], batch[f"{part}_mask"]) for part in ("prompt", "chosen", "rejected")}


# -- tokenization by hand ------------------------------------------------------------------


def test_plain_pairs_by_hand_in_the_batch_contract(tmp_path):
    data = make(write_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path)
    data.setup(ByteTokenizer())
    (batch,) = list(data.example_batches())
    check_preference_batch(batch)
    # prompt = EOS + bytes (a document follows an EOS); completion = bytes + EOS
    assert contents(batch) == {
        "prompt": [[EOS, *b(r["prompt"])] for r in ROWS],
        "chosen": [[*b(r["chosen"]), EOS] for r in ROWS],
        "rejected": [[*b(r["rejected"]), EOS] for r in ROWS],
    }
    for part in ("prompt", "chosen", "rejected"):
        ids, mask = batch[f"{part}_ids"], batch[f"{part}_mask"]
        assert ids.dtype == torch.long and mask.dtype == torch.bool
        assert ids.shape[1] == int(mask.sum(1).max())  # padded to the batch's own longest row
        assert (ids[~mask] == 0).all() and (mask.long().diff(dim=1) <= 0).all()  # right padding with 0
    assert batch["row"].tolist() == [0, 1, 2] and data.n_rows == 3
    assert data.pairs("train") == [(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS]
    assert data.prompts("train") == [r["prompt"] for r in ROWS]
    assert data.stats["train"] == {"pairs": 3, "rows": 3, "tokens": sum(len(b(r[k])) + 1 for r in ROWS for k in r),
                                   "truncated": 0, "truncated_prompts": 0, "dropped": {}, "skipped": {}}
    # the objective's join: prompt + chosen, labels only on the completion
    inputs, labels = pair_sequences(batch)
    assert inputs[0, :len(ROWS[0]["prompt"]) + 1].tolist() == [EOS, *b(ROWS[0]["prompt"])]
    assert [t for t in labels[0].tolist() if t != -100] == [*b("4"), EOS]
    assert list(data.val_batches()) == [] and data.eval_sets() == {}


def test_sources_jsonl_json_parquet_disk_folder_and_list_agree(tmp_path):
    from datasets import Dataset

    write_jsonl(tmp_path / "p.jsonl", ROWS)
    (tmp_path / "p.json").write_text(json.dumps(ROWS), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "b.jsonl", ROWS[2:])
    want = [(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS]
    for source in ("p.jsonl", "p.json", "p.parquet", "saved", ["a.jsonl", "b.jsonl"], "[ab].jsonl"):
        path = [str(tmp_path / s) for s in source] if isinstance(source, list) else tmp_path / source
        data = make(path, tmp_path)
        data.setup(ByteTokenizer())
        assert data.pairs("train") == want, source
    with pytest.raises(InputError, match=r"no such file or folder .*never looked up on the Hub"):
        make(tmp_path / "missing.jsonl", tmp_path)
    with pytest.raises(InputError, match=r"'\./nope\.jsonl'.*no such file or folder"):
        PreferencePairs("./nope.jsonl")


def test_field_names_and_a_missing_column_named_with_the_closest(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "chosen_response": r["chosen"], "bad": r["rejected"]}
            for r in ROWS]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    data = make(path, tmp_path, prompt_field="question", chosen_field="good", rejected_field="bad")
    data.setup(ByteTokenizer())
    assert data.pairs("train") == [(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS]
    with pytest.raises(InputError) as err:
        make(path, tmp_path, prompt_field="question", rejected_field="bad").setup(ByteTokenizer())
    msg = str(err.value)
    assert "split 'train': no column 'chosen' (data.chosen_field); did you mean data.chosen_field='chosen_response'?" \
        in msg and "'question', 'good', 'chosen_response', 'bad'" in msg and "\n" not in msg


# -- truncation, filters ---------------------------------------------------------------------


PROMPT = [EOS, *b("abcd")]  # 5 tokens
CHOSEN = [*b("xyz"), EOS]  # 4 tokens
REJECTED = [*b("q"), EOS]  # 2 tokens


@pytest.mark.parametrize("opts, want, truncated, truncated_prompts", [
    # keep_start, room 7 - 5 = 2 for each completion: chosen loses "z" + EOS
    ({"max_length": 7}, (PROMPT, CHOSEN[:2], REJECTED), 1, 0),
    # keep_end: the prompt loses 5 + 4 - 7 = 2 tokens from its start, completions whole
    ({"max_length": 7, "truncation": "keep_end"}, (PROMPT[2:], CHOSEN, REJECTED), 0, 1),
    # keep_end with no room: the prompt keeps its last token, the chosen is cut at its end
    ({"max_length": 4, "truncation": "keep_end"}, (PROMPT[-1:], CHOSEN[:3], REJECTED), 1, 1),
    # max_prompt_length keeps the prompt's last 2 tokens, then room 5 - 2 = 3
    ({"max_length": 5, "max_prompt_length": 2}, (PROMPT[-2:], CHOSEN[:3], REJECTED), 1, 1),
    ({"max_prompt_length": 3}, (PROMPT[-3:], CHOSEN, REJECTED), 0, 1),
    ({}, (PROMPT, CHOSEN, REJECTED), 0, 0),
])
def test_truncation_by_hand(tmp_path, opts, want, truncated, truncated_prompts):
    data = make(write_jsonl(tmp_path / "t.jsonl", [{"prompt": "abcd", "chosen": "xyz", "rejected": "q"}]), tmp_path,
                **opts)
    data.setup(ByteTokenizer())
    batch = next(data.train_batches())
    got = contents(batch)
    assert (got["prompt"][0], got["chosen"][0], got["rejected"][0]) == want
    stats = data.stats["train"]
    assert (stats["truncated"], stats["truncated_prompts"]) == (truncated, truncated_prompts)


def test_dropped_pairs_counted_by_reason(tmp_path):
    rows = [
        {"prompt": "p0", "chosen": "same", "rejected": "same"},  # identical
        {"prompt": "p1", "chosen": "", "rejected": "x"},  # empty_completion
        {"prompt": "a long prompt", "chosen": "y", "rejected": "z"},  # EOS + 13 bytes >= max_length 6
        {"prompt": "p3", "chosen": "abcX", "rejected": "abcY"},  # identical once cut to room 6 - 3 = 3
        {"prompt": "p4", "chosen": "ok", "rejected": "no"},  # kept
        {"prompt": "p5", "chosen": "ab", "rejected": "ab"},  # identical
    ]
    data = make(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path, max_length=6)
    data.setup(ByteTokenizer())
    s = data.stats["train"]
    assert s["pairs"] == 1 and s["rows"] == 6
    assert s["dropped"] == {"prompt_too_long": 1, "empty_completion": 1, "identical": 3}
    assert data.pairs("train") == [("p4", "ok", "no")]
    assert next(data.train_batches())["row"].tolist() == [0]  # row ids count kept pairs
    only_bad = make(write_jsonl(tmp_path / "e.jsonl", rows[:2]), tmp_path)
    with pytest.raises(InputError, match=r"the training split has no pairs \(2 rows; dropped: 1 empty_completion, "
                                         r"1 identical\)"):
        only_bad.setup(ByteTokenizer())


def test_bad_rows_named_by_file_split_and_row_or_counted(tmp_path):
    rows = [ROWS[0], {"prompt": "x", "chosen": None, "rejected": "y"}, {"prompt": "  ", "chosen": "a", "rejected": "b"},
            ROWS[1]]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError) as err:
        make(path, tmp_path).setup(ByteTokenizer())
    msg = str(err.value)
    assert msg.startswith(f"PreferencePairs {str(path)!r} split 'train': row 1 (0-based): field 'chosen' (chosen) is "
                          f"missing or null. Fix the data,") and "data.on_bad_row=skip" in msg and "\n" not in msg
    data = make(path, tmp_path, on_bad_row="skip")
    data.setup(ByteTokenizer())
    assert data.pairs("train") == [tuple(ROWS[i].values()) for i in (0, 1)]
    assert data.stats["train"]["skipped"] == {"empty_prompt": 1, "missing_field": 1}
    assert data.stats["skipped"] == {"empty_prompt": 1, "missing_field": 1}
    assert data.skipped_examples[0].endswith("row 1 (0-based): field 'chosen' (chosen) is missing or null")
    # a non-string and malformed messages (parquet holds a column of mixed-up rows as written)
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "chosen": 7, "rejected": 8}]), tmp_path / "n.parquet")
    with pytest.raises(InputError, match=r"row 0 \(0-based\): field 'chosen' \(chosen\) is int 7, not a string"):
        make(tmp_path / "n.parquet", tmp_path).setup(ByteTokenizer())
    msgs = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant"}],
             "rejected": [{"role": "assistant", "content": "no"}]}]
    with pytest.raises(InputError, match=r"row 0 \(0-based\): field 'chosen' \(chosen\): message 0 needs a string "
                                         r"'role' and a string 'content'"):
        make(write_jsonl(tmp_path / "m.jsonl", msgs), tmp_path).setup(ByteTokenizer())


# -- order, rows, hold-out, cache ----------------------------------------------------------


def many(n):
    return [{"prompt": f"prompt {i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(n)]


def test_train_batches_resume_and_epochs(tmp_path):
    data = make(write_jsonl(tmp_path / "m.jsonl", many(11)), tmp_path, batch_size=3, seed=5)
    data.setup(ByteTokenizer())
    assert (data.train_batch_size, data.batches_per_epoch) == (3, 3)  # 11 // 3; 2 pairs sit out each epoch
    first = list(itertools.islice(data.train_batches(), 9))
    for start in (0, 2, 4, 7):
        resumed = list(itertools.islice(data.train_batches(start=start), 9 - start))
        for x, y in zip(first[start:], resumed):
            assert all(torch.equal(x[k], y[k]) for k in x)
    for e in range(3):
        rows = torch.cat([bt["row"] for bt in first[3 * e:3 * e + 3]]).tolist()
        assert len(set(rows)) == 9 and set(rows) <= set(range(11))
    assert [bt["row"].tolist() for bt in first[:3]] != [bt["row"].tolist() for bt in first[3:6]]
    other = make(write_jsonl(tmp_path / "m.jsonl", many(11)), tmp_path, batch_size=3, seed=6)
    other.setup(ByteTokenizer())
    assert next(other.train_batches())["row"].tolist() != first[0]["row"].tolist()
    # a batch's ids are its rows' pairs
    texts = data.pairs("train")
    tok = ByteTokenizer()
    for bt in first[:3]:
        got = contents(bt)
        for k, row in enumerate(bt["row"].tolist()):
            assert tok.decode(got["prompt"][k]) == texts[row][0] and tok.decode(got["chosen"][k]) == texts[row][1]
    small = make(write_jsonl(tmp_path / "s.jsonl", many(2)), tmp_path, batch_size=8)
    small.setup(ByteTokenizer())
    assert small.train_batch_size == 2 and sorted(next(small.train_batches())["row"].tolist()) == [0, 1]


def test_hold_out_rows_and_row_ids_unique_and_stable(tmp_path):
    path = write_jsonl(tmp_path / "h.jsonl", many(40))
    data = make(path, tmp_path, val_fraction=0.25, batch_size=4)
    data.setup(ByteTokenizer())
    held = [i for i in range(40) if unit(f"h.jsonl|None|train:{i}") < 0.25]
    assert 0 < len(held) < 40
    assert data.prompts("val") == [f"prompt {i}" for i in held]
    assert data.prompts("train") == [f"prompt {i}" for i in range(40) if i not in held]
    n_train = 40 - len(held)
    assert list(data.split_rows("train")) == list(range(n_train))
    assert list(data.split_rows("val")) == list(range(n_train, 40))
    rows = [r for bt in data.example_batches() for r in bt["row"].tolist()]
    assert rows == list(range(40)) == list(range(data.n_rows))
    val = list(data.val_batches())
    assert [r for bt in val for r in bt["row"].tolist()] == list(range(n_train, 40)) and len(val[-1]["row"]) <= 4
    again = make(path, tmp_path, val_fraction=0.25, batch_size=4)
    again.setup(ByteTokenizer())
    assert again.pairs("val") == data.pairs("val") and again.fingerprint == data.fingerprint
    with pytest.raises(InputError, match=r"data.val_fraction=0.001: the validation split is empty \(0 of the 40 pairs"):
        make(path, tmp_path, val_fraction=0.001).setup(ByteTokenizer())


def test_second_setup_reads_the_cache(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", many(5))
    data = make(path, tmp_path)
    data.setup(ByteTokenizer())
    files = sorted((tmp_path / "cache" / "tokenized").glob("pairs-train-*.arrow"))
    assert len(files) == 1

    class NoEncode(ByteTokenizer):
        def encode(self, text):
            raise AssertionError("tokenized again")

        def encode_batch(self, texts):
            raise AssertionError("tokenized again")

    again = make(path, tmp_path)
    again.setup(NoEncode())
    first, second = next(data.example_batches()), next(again.example_batches())
    assert all(torch.equal(first[k], second[k]) for k in first)
    cut = make(path, tmp_path, max_length=6)  # another option: another cache file
    with pytest.raises(AssertionError, match="tokenized again"):
        cut.setup(NoEncode())


# -- chat templates against TRL -------------------------------------------------------------

CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = [
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "two plus two?"}],
     "chosen": [{"role": "assistant", "content": "four"}], "rejected": [{"role": "assistant", "content": "five"}]},
    {"prompt": [{"role": "user", "content": "hello world"}],
     "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "what"}]},
]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, two plus two is four not five; be brief"] * 20, trainer)
    folder = tmp_path_factory.mktemp("hf-chat")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", add_bos_token=True,
                            chat_template=CHATML).save_pretrained(folder)
    return folder


def test_chat_rows_render_as_trl_and_tokenize_without_added_specials(tmp_path, hf_folder):
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template

    from rizzrun.tokenizers.hf import HFTokenizer

    ref = AutoTokenizer.from_pretrained(str(hf_folder))
    data = make(write_jsonl(tmp_path / "chat.jsonl", CHAT), tmp_path)
    data.setup(HFTokenizer(str(hf_folder)))
    want = [apply_chat_template(row, ref) for row in CHAT]
    assert data.pairs("train") == [(w["prompt"], w["chosen"], w["rejected"]) for w in want]
    assert want[0]["prompt"].startswith("<|bos|><|im_start|>system") and want[0]["chosen"] == "four<|im_end|>\n"
    got = contents(next(data.example_batches()))
    for k, w in enumerate(want):
        for part in ("prompt", "chosen", "rejected"):  # the template wrote the specials; no EOS appended
            assert got[part][k] == ref(w[part], add_special_tokens=False)["input_ids"], (k, part)
    with pytest.raises(InputError, match=r"data.format=auto: the rows are conversational .*ByteTokenizer has none.*"
                                         r"allowed: data.format=auto\|plain\|chat"):
        make(tmp_path / "chat.jsonl", tmp_path).setup(ByteTokenizer())
    with pytest.raises(InputError, match=r"row 0 \(0-based\): field 'prompt' \(prompt\) is a message list .*"
                                         r"data.format=plain needs strings"):
        make(tmp_path / "chat.jsonl", tmp_path, format="plain").setup(ByteTokenizer())
    with pytest.raises(InputError, match=r"field 'prompt' \(prompt\) is str, not a list of"):
        make(write_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path, format="chat").setup(ByteTokenizer())


def test_plain_rows_with_an_hf_tokenizer_use_its_bos(tmp_path, hf_folder):
    from transformers import AutoTokenizer

    from rizzrun.tokenizers.hf import HFTokenizer

    ref = AutoTokenizer.from_pretrained(str(hf_folder))
    tok = HFTokenizer(str(hf_folder))
    data = make(write_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path)
    data.setup(tok)
    got = contents(next(data.example_batches()))
    for k, r in enumerate(ROWS):
        assert got["prompt"][k] == ref(r["prompt"])["input_ids"] and got["prompt"][k][0] == tok.bos_id
        assert got["chosen"][k] == ref(r["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_id]


def test_train_texts_and_config_rules(tmp_path, hf_folder):
    from rizzrun.data import arithmetic_spec, preference_spec

    data = make(write_jsonl(tmp_path / "chat.jsonl", CHAT), tmp_path)
    assert list(data.train_texts()) == [m["content"] for row in CHAT for k in ("prompt", "chosen", "rejected")
                                        for m in row[k]]
    data = make(write_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path)
    assert list(data.train_texts()) == [r[k] for r in ROWS for k in ("prompt", "chosen", "rejected")]
    assert preference_spec.check({"path": "./nope.jsonl", "max_length": 4, "max_prompt_length": 4}, "data") == [
        "data.path='./nope.jsonl': no such file or folder (a path starting with /, ./, ../ or ~ is never looked up "
        "on the Hub); give an existing local file or folder, or a Hub dataset name",
        "data.max_prompt_length=4: must be < data.max_length=4, so that a completion has room; lower it or raise "
        "data.max_length",
    ]
    assert preference_spec.check({"path": "org/hub-name"}, "data") == []
    assert preference_spec.check({"path": [str(tmp_path / "p.jsonl"), str(tmp_path / "q.jsonl")]}, "data") == [
        f"data.path=['{tmp_path}/p.jsonl', '{tmp_path}/q.jsonl']: '{tmp_path}/q.jsonl': no such file or folder (a "
        f"path starting with /, ./, ../ or ~ is never looked up on the Hub); give an existing local file or folder, "
        f"or a Hub dataset name"]
    assert arithmetic_spec.check({"artifact": "", "artifact_rate": 0.8}, "data")[0].startswith(
        "data.artifact_rate=0.8: needs an artifact text")
    assert arithmetic_spec.RANGES["ArithmeticPairs"]["val_fraction"] == ((">", 0), ("<", 1))
