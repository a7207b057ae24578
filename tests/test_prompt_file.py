"""Prompts from files (data=prompt_file, rizzrun.data.prompt_file.PromptFile): sources, the hold-out
by the prompt's hash, columns, bad rows, chat prompts through an HF tokenizer's template,
PromptData's batches (left padding, rows, resume, epochs, truncation, dropped prompts), options
and config rules."""

import hashlib
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rizzrun.data.prompt_file import PromptFile  # noqa: E402
from rizzrun.errors import InputError  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
EOS = ByteTokenizer.eos_id
ROWS = [{"prompt": f"Q{k}: {'x' * (k % 4)}what is {k}+{k}?", "answer": str(2 * k), "level": k % 3} for k in range(40)]


def unit(key):
    """Second formulation of the hold-out hash: first 8 bytes of sha256, big-endian, over 2**64."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make(path, tmp_path, **kw):
    kw.setdefault("val_fraction", 0)
    return PromptFile(str(path), cache_dir=str(tmp_path / "cache"), **kw)


def real(batch):
    return [ids[mask].tolist() for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]


def test_sources_agree_and_the_hold_out_is_the_prompts_hash(tmp_path):
    from datasets import Dataset

    write_jsonl(tmp_path / "p.jsonl", ROWS)
    (tmp_path / "p.json").write_text(json.dumps(ROWS), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    write_jsonl(tmp_path / "a.jsonl", ROWS[:25])
    write_jsonl(tmp_path / "b.jsonl", ROWS[25:])
    want_val = [r for r in ROWS if unit(r["prompt"]) < 0.3]
    want_train = [r for r in ROWS if unit(r["prompt"]) >= 0.3]
    assert 0 < len(want_val) < 40
    fingerprints = set()
    for source in ("p.jsonl", "p.json", "p.parquet", "saved", "[ab].jsonl"):
        data = make(tmp_path / source, tmp_path, val_fraction=0.3)
        data.setup(ByteTokenizer())
        assert data.prompts("train") == [r["prompt"] for r in want_train], source
        assert data.prompts("val") == [r["prompt"] for r in want_val], source
        # rows: train 0..N-1 then val; columns(rows) gives every other field of the given rows
        n = len(want_train)
        assert list(data.split_rows("val")) == list(range(n, 40))
        rows = [n, 0, n + 1, 3, 3]
        prompts, columns = data.columns(rows)
        both = want_train + want_val
        assert prompts == [both[r]["prompt"] for r in rows]
        assert columns == {"answer": [both[r]["answer"] for r in rows], "level": [both[r]["level"] for r in rows]}
        assert data.default_rewards() is None
        fingerprints.add(data.fingerprint)
    assert len(fingerprints) == 5
    # max_prompts: the first rows of the split, before the hold-out
    data = make(tmp_path / "p.jsonl", tmp_path, val_fraction=0.3, max_prompts=20)
    data.setup(ByteTokenizer())
    assert data.prompts("train") + data.prompts("val") == [r["prompt"] for r in want_train + want_val
                                                           if int(r["answer"]) < 40]
    # val_fraction=0: no validation
    data = make(tmp_path / "p.jsonl", tmp_path)
    data.setup(ByteTokenizer())
    assert data.prompts("train") == [r["prompt"] for r in ROWS] and list(data.val_batches()) == []
    # a duplicated prompt is on one side only, whatever its row
    write_jsonl(tmp_path / "dup.jsonl", ROWS + [dict(want_val[0], answer="again"), dict(want_train[0], answer="2")])
    data = make(tmp_path / "dup.jsonl", tmp_path, val_fraction=0.3)
    data.setup(ByteTokenizer())
    assert data.prompts("val").count(want_val[0]["prompt"]) == 2 and want_val[0]["prompt"] not in data.prompts("train")
    assert data.prompts("train").count(want_train[0]["prompt"]) == 2


def test_a_validation_split_and_columns(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS[:30]), "test": Dataset.from_list(ROWS[30:])}).save_to_disk(
        str(tmp_path / "dd"))
    data = make(tmp_path / "dd", tmp_path, val_split="test", columns=["answer"], max_prompts=10)
    data.setup(ByteTokenizer())
    assert data.prompts("train") == [r["prompt"] for r in ROWS[:10]]
    assert data.prompts("val") == [r["prompt"] for r in ROWS[30:]]  # the whole val split
    assert data.columns([10, 0]) == ([ROWS[30]["prompt"], ROWS[0]["prompt"]], {"answer": ["60", "0"]})
    with pytest.raises(InputError, match=r"^PromptFile '.*dd': no split 'dev'; available splits: 'train', 'test'; "
                                         r"set data.val_split to one of them$"):
        make(tmp_path / "dd", tmp_path, val_split="dev")._rows()
    with pytest.raises(InputError, match=r"split 'train': no column 'answr' \(a field of data.columns=\['answr'\]\); "
                                         r"did you mean a field of data.columns=\['answr'\]='answer'\? available "
                                         r"columns: 'prompt', 'answer', 'level'$"):
        make(tmp_path / "dd", tmp_path, columns=["answr"])._rows()
    write_jsonl(tmp_path / "q.jsonl", [{"question": r["prompt"], "answer": r["answer"], "ids": 1} for r in ROWS])
    with pytest.raises(InputError, match=r"split 'train': no column 'prompt' \(data.prompt_field\); available "
                                         r"columns: 'question', 'answer', 'ids'$"):
        make(tmp_path / "q.jsonl", tmp_path)._rows()
    with pytest.raises(InputError, match=r"field 'ids' is a name rizzrun uses itself \(prompt, prompt_text, ids, "
                                         r"prompts, completions\); list the fields to keep in data.columns"):
        make(tmp_path / "q.jsonl", tmp_path, prompt_field="question")._rows()
    data = make(tmp_path / "q.jsonl", tmp_path, prompt_field="question", columns=["answer"])
    data.setup(ByteTokenizer())
    assert data.columns([1])[1] == {"answer": ["2"]}


@pytest.mark.parametrize("bad, reason, detail", [
    ({"answer": "1"}, "missing_field", "field 'prompt' (prompt) is missing or null"),
    ({"prompt": None}, "missing_field", "field 'prompt' (prompt) is missing or null"),
    ({"prompt": [{"role": "user"}]}, "malformed_messages",
     "field 'prompt' (prompt): message 0 needs a string 'role' and a string 'content'"),
    ({"prompt": []}, "malformed_messages", "field 'prompt' (prompt) is an empty list, not a list of"),
])
def test_bad_rows_named_by_file_split_row_and_field_or_counted(tmp_path, bad, reason, detail):
    rows = [ROWS[0], ROWS[1], bad, ROWS[2], bad]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError) as info:
        make(path, tmp_path).setup(ByteTokenizer())
    text = str(info.value)
    assert text.startswith(f"PromptFile '{path}' split 'train': row 2 (0-based): {detail}") and "\n" not in text
    assert text.endswith("or set data.on_bad_row=skip to drop bad rows and count them") and " or or " not in text
    data = make(path, tmp_path, on_bad_row="skip")
    data.setup(ByteTokenizer())
    assert data.prompts("train") == [r["prompt"] for r in ROWS[:3]]
    assert data.stats["train"]["skipped"] == {reason: 2} and data.stats["train"]["prompts"] == 3
    assert [e.split(": ", 2)[1] for e in data.skipped_examples] == ["row 2 (0-based)", "row 4 (0-based)"]
    with pytest.raises(InputError, match=r"^data: train split: no prompt \(data.path=.* \(data.split=train; 3 bad "
                                         r"rows skipped\)\); add prompts"):
        all_bad = [bad, bad, {"prompt": None, "answer": "x"}]  # (the last one: a file with a prompt column)
        make(write_jsonl(tmp_path / "all_bad.jsonl", all_bad), tmp_path, on_bad_row="skip").setup(ByteTokenizer())


def test_a_non_string_prompt_in_parquet(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"prompt": 1, "answer": "a"}, {"prompt": 7, "answer": "b"}]),
                   tmp_path / "ints.parquet")
    with pytest.raises(InputError, match=r"split 'train': row 0 \(0-based\): field 'prompt' \(prompt\) is int 1, not "
                                         r"a string or a list of \{'role', 'content'\} messages\. Fix the data, or"):
        make(tmp_path / "ints.parquet", tmp_path).setup(ByteTokenizer())


def test_batches_left_padded_resumable_and_permuted_per_epoch(tmp_path):
    data = make(write_jsonl(tmp_path / "p.jsonl", ROWS[:10]), tmp_path, batch_size=4, seed=3)
    data.setup(ByteTokenizer())
    texts = [r["prompt"] for r in ROWS[:10]]
    b = next(data.train_batches())
    width = max(len(texts[r]) + 1 for r in b["row"].tolist())
    assert b["prompt_ids"].shape == (4, width)
    for ids, mask, r in zip(b["prompt_ids"].tolist(), b["prompt_mask"].tolist(), b["row"].tolist()):
        want = [EOS, *texts[r].encode()]
        pad = width - len(want)
        assert ids == [0] * pad + want and mask == [False] * pad + [True] * len(want)
    assert len({len(texts[r]) for r in b["row"].tolist()}) > 1  # padding was needed
    stream = data.train_batches()
    first = [next(stream) for _ in range(6)]  # 10 // 4 = 2 batches per epoch: 3 epochs
    for e in range(3):
        seen = first[2 * e]["row"].tolist() + first[2 * e + 1]["row"].tolist()
        assert seen == data.epoch_order(e).tolist()[:8] and len(set(seen)) == 8
    assert len({tuple(data.epoch_order(e).tolist()) for e in range(3)}) == 3
    for i in range(6):
        again = next(data.train_batches(start=i))
        assert all(torch.equal(again[k], first[i][k]) for k in first[i]), i
    # max_prompt_length keeps the last tokens and counts the truncated prompts
    cut = make(tmp_path / "p.jsonl", tmp_path, max_prompt_length=12)
    cut.setup(ByteTokenizer())
    for ids, text in zip(cut.prompt_token_ids("train"), texts):
        full = [EOS, *text.encode()]
        assert ids == full[-12:]
    assert cut.stats["train"]["truncated"] == sum(len(t) + 1 > 12 for t in texts) > 0
    assert cut.stats["train"]["tokens"] == sum(min(len(t) + 1, 12) for t in texts)


# -- chat prompts and Hugging Face tokenizers --------------------------------------------------

CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = [
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "two plus two?"}],
     "answer": "4"},
    {"prompt": [{"role": "user", "content": "hello world"}], "answer": "hello"},
    {"prompt": "plain two plus two", "answer": "4"},
]


def hf_folder(root, bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, two plus two is four; be brief"] * 20, trainer)
    folder = root / ("hf-bos" if bos else "hf-nobos")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", add_bos_token=bos,
                            chat_template=CHATML).save_pretrained(folder)
    return folder


def test_chat_prompts_render_with_the_tokenizers_template(tmp_path):
    from transformers import AutoTokenizer

    from rizzrun.tokenizers.hf import HFTokenizer

    folder = hf_folder(tmp_path, bos=True)
    ref = AutoTokenizer.from_pretrained(str(folder))
    data = make(write_jsonl(tmp_path / "chat.jsonl", CHAT), tmp_path, batch_size=3)
    data.setup(HFTokenizer(str(folder)))
    want = [ref.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in CHAT[:2]]
    assert want[0].startswith("<|bos|><|im_start|>system\nBe brief.") and want[1].endswith("<|im_start|>assistant\n")
    assert data.prompts("train") == [*want, CHAT[2]["prompt"]]
    ids = data.prompt_token_ids("train")
    for k in range(2):  # the template wrote the specials; none added
        assert ids[k] == ref(want[k], add_special_tokens=False)["input_ids"]
    assert ids[2] == ref(CHAT[2]["prompt"])["input_ids"] and ids[2][0] == ref.bos_token_id  # plain: the BOS
    # the rewards see the rendered prompt and the row's columns
    assert data.columns([1, 0]) == ([want[1], want[0]], {"answer": ["hello", "4"]})
    texts = list(data.train_texts())
    assert texts == ["Be brief.", "two plus two?", "4", "hello world", "hello", "plain two plus two", "4"]
    # the hold-out hashes a message list's JSON (keys sorted)
    key = json.dumps(CHAT[0]["prompt"], ensure_ascii=False, sort_keys=True)
    fraction = unit(key) + 1e-9
    held = make(tmp_path / "chat.jsonl", tmp_path, val_fraction=fraction)
    held.setup(HFTokenizer(str(folder)))
    assert want[0] in held.prompts("val")
    with pytest.raises(InputError, match=r"a chat prompt \(a list of messages\) needs a tokenizer with a chat "
                                         r"template; ByteTokenizer has none \(use tokenizer=hf\)"):
        make(tmp_path / "chat.jsonl", tmp_path).setup(ByteTokenizer())


def test_a_prompt_that_encodes_to_nothing_is_dropped_and_counted(tmp_path):
    from rizzrun.tokenizers.hf import HFTokenizer

    tok = HFTokenizer(str(hf_folder(tmp_path, bos=False)))  # adds no special token to a plain prompt
    data = make(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "", "answer": "a"}, *ROWS[:3]]), tmp_path)
    data.setup(tok)
    assert data.stats["train"]["dropped"] == {"empty_prompt": 1} and data.stats["train"]["prompts"] == 3
    assert data.prompts("train") == [r["prompt"] for r in ROWS[:3]]
    assert data.columns([0])[1] == {"answer": ["0"], "level": [0]}  # row ids count the kept prompts


def test_an_empty_prompt_is_dropped_with_a_byte_tokenizer(tmp_path):
    data = make(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "", "answer": "a"}, {"prompt": "  ", "answer": "b"},
                                                   *ROWS[:3]]), tmp_path)
    data.setup(ByteTokenizer())
    assert data.stats["train"]["dropped"] == {"empty_prompt": 2} and data.stats["train"]["prompts"] == 3


# -- options and config ------------------------------------------------------------------------

def test_bad_options_are_one_line_errors_naming_the_key(tmp_path):
    path = str(write_jsonl(tmp_path / "p.jsonl", ROWS[:3]))
    for kw, pattern in [
        ({"path": ""}, r"^data.path='': must be a local file"),
        ({"path": "./nope.jsonl"}, r"^PromptFile './nope.jsonl': no such file or folder \(a path starting with /"),
        ({"path": str(tmp_path / "*.parquet")}, r"the pattern matches no file"),
        ({"val_split": "train"}, r"^data.val_split='train': the same as split"),
        ({"val_fraction": 1.0}, r"^data.val_fraction=1.0: must be in \[0, 1\)$"),
        ({"prompt_field": ""}, r"^data.prompt_field='': must be a non-empty string$"),
        ({"columns": "answer"}, r"^data.columns='answer': must be null \(every field\) or a list of field names, "
                                r"e.g. data.columns=\[answer\]$"),
        ({"columns": ["answer", "answer"]}, r"^data.columns=\['answer', 'answer'\]: names 'answer' twice"),
        ({"columns": ["prompt"]}, r"^data.columns=\['prompt'\]: names 'prompt' twice \(or the prompt"),
        ({"columns": ["ids"]}, r"^data.columns=\['ids'\]: 'ids' is a name rizzrun uses itself"),
        ({"max_prompts": 0}, r"^data.max_prompts=0: must be null or an integer >= 1$"),
        ({"on_bad_row": "drop"}, r"^data.on_bad_row='drop': allowed: error, skip$"),
        ({"batch_size": 0}, r"^data.batch_size=0: must be an integer >= 1$"),
        ({"max_prompt_length": 0}, r"^data.max_prompt_length=0: must be an integer >= 1 or null$"),
    ]:
        kw = {"path": path, **kw}
        with pytest.raises(InputError, match=pattern) as info:
            PromptFile(**kw)
        assert "\n" not in str(info.value), kw
    prompt = next(f"p{i}" for i in range(100) if unit(f"p{i}") < 0.5)  # held out at val_fraction=0.5
    with pytest.raises(InputError, match=r"^data.val_fraction=0.5: the training split is empty \(all 1 prompt held "
                                         r"out for validation\): lower data.val_fraction or set data.val_split=NAME$"):
        make(write_jsonl(tmp_path / "one.jsonl", [{"prompt": prompt}]), tmp_path, val_fraction=0.5)._rows()
    with pytest.raises(InputError, match=r"the validation split is empty \(0 of the 3 prompts held out\): raise "
                                         r"data.val_fraction"):
        make(path, tmp_path, val_fraction=min(unit(r["prompt"]) for r in ROWS[:3]) * 0.999)._rows()


def test_config_file_and_rules(tmp_path):
    import inspect

    from omegaconf import OmegaConf

    from rizzrun.data import prompt_file_spec
    from rizzrun.paths import conf_dir

    node = OmegaConf.to_container(OmegaConf.load(conf_dir() / "data" / "prompt_file.yaml"))
    assert node.pop("_target_") == "rizzrun.data.prompt_file.PromptFile" and node.pop("path") == "???"
    node.update(seed=0, cache_dir=None)
    defaults = {k: p.default for k, p in inspect.signature(PromptFile).parameters.items() if k != "path"}
    assert node == defaults
    assert prompt_file_spec.check({"path": "./nope.jsonl"}, "data") == [
        "data.path='./nope.jsonl': no such file or folder (a path starting with /, ./, ../ or ~ is never looked up "
        "on the Hub); give an existing local file or folder, or a Hub dataset name"]
    assert prompt_file_spec.check({"path": "org/hub-name"}, "data") == []
    path = str(write_jsonl(tmp_path / "p.jsonl", ROWS[:2]))
    assert prompt_file_spec.check({"path": path, "columns": ["q", "answer"], "prompt_field": "q"}, "data") == [
        "data.columns=['q', 'answer']: holds the prompt's own field 'q' (data.prompt_field); list the other fields "
        "the rewards need"]
    assert prompt_file_spec.RANGES["PromptFile"]["max_prompts"] == ((">=", 1),)
