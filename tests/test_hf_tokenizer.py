"""HFTokenizer (tokenizer=hf) against `transformers.AutoTokenizer` loaded from the same folder.

The folders are built here: tiny tokenizers trained with the `tokenizers` library, wrapped in
`PreTrainedTokenizerFast` and written with `save_pretrained`, then edited the way real folders
differ (config keys transformers ignores, a special token missing from tokenizer.json, a chat
template in tokenizer_config.json instead of chat_template.jinja, generation_config.json).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from rizzrun.config import ConfigError, load
from rizzrun.config.resume import override_value
from rizzrun.errors import InputError
from rizzrun.tokenizers import META_FILE, load_tokenizer
from rizzrun.tokenizers.hf import HFTokenizer, folder_vocab_size

REPO = Path(__file__).resolve().parents[1]

CORPUS = [
    "the model reads tokens and predicts the next token from the previous ones",
    "Hello, World! It's a naïve café; déjà vu at the résumé desk.",
    "日本語のテキストと東京タワー, 中文字符, 한국어 문장",
    "emoji 🙂 🚀 👍🏽 and symbols ① ﬁ — “quotes”",
    "tab\tseparated\tvalues\nand new lines\r\n",
] * 40

TEXTS = [
    "",
    " ",
    "   \n\t  ",
    "hello world",
    "Hello, World! It's 2024.",
    "naïve café déjà vu",
    "日本語のテキスト",
    "🙂👍🏽🚀",
    "mixed: déjà vu — 東京 🚀 end.",
    "  leading and trailing  ",
    "line1\nline2\r\nline3",
    "ﬁ ligature ① NFKC",
    "zero\u200bwidth and e\u0301 combining",
    "specials inside: <|eos|> [SEP] </s> <s> <sep> <|tool|>",
    "the model reads tokens " * 20,
]

CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Whitespace handling (trim_blocks / lstrip_blocks), loop variables, tojson and namespace.
INDENTED = """{% set ns = namespace(n=0) %}
{% for message in messages %}
    {% set ns.n = ns.n + 1 %}
    [{{ loop.index }}/{{ messages | length }}] {{ message.role | upper }}: {{ message.content | trim }}
    {% if message.meta is defined %}meta={{ message.meta | tojson }}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
ASSISTANT ({{ ns.n }} so far){{ eos_token }}
{% endif %}"""

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  Grüß dich — 東京は? 🙂 ",
     "meta": {"lang": "de/ja", "emoji": "🙂", "n": [1, 2]}},
    {"role": "assistant", "content": "Hallo!", "tool_calls": None},
    {"role": "user", "content": "<b>bold</b> & \"quotes\""},
]


def _bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _wordpiece():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials,
                                                              show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    # Stored in tokenizer.json as many BERT folders have it; transformers switches both off to encode.
    tok.enable_truncation(max_length=8)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]", length=32)
    return tok


def _unigram():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=250, special_tokens=["<unk>", "<s>", "</s>"],
                                                            unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(  # T5-style: EOS after every sequence
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _build(kind: str, folder: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        # Byte-level BPE with BOS added by the post-processor (add_bos_token=True at construction),
        # an added non-special token, chat_template.jinja, several EOS ids in generation_config.json.
        fast = PreTrainedTokenizerFast(tokenizer_object=_bpe(), bos_token="<|bos|>", eos_token="<|eos|>",
                                       pad_token="<|pad|>", add_bos_token=True, chat_template=CHATML)
        fast.add_tokens(["<|tool|>"])
        fast.save_pretrained(folder)
        _edit_json(folder / "tokenizer_config.json", add_bos_token=True)
        eos = fast.convert_tokens_to_ids(["<|eos|>", "<|tool|>"])
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    elif kind == "wordpiece":
        # BERT-style: [CLS] text [SEP], lowercasing and accent stripping, clean-up of spaces on decode,
        # special-token strings in text encoded as text (split_special_tokens), no bos, no chat template.
        fast = PreTrainedTokenizerFast(tokenizer_object=_wordpiece(), unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       eos_token="[SEP]", clean_up_tokenization_spaces=True,
                                       split_special_tokens=True)
        fast.save_pretrained(folder)
        saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        assert saved["truncation"]["max_length"] == 8 and saved["padding"]["strategy"] == {"Fixed": 32}
    elif kind == "unigram":
        # SentencePiece-like Unigram + Metaspace, EOS appended by the post-processor, no pad token
        # (pad falls back to EOS), `add_bos_token: true` in the config (transformers ignores it when
        # tokenizer.json exists), a sep token tokenizer.json lacks (transformers adds it), the chat
        # template inside tokenizer_config.json.
        fast = PreTrainedTokenizerFast(tokenizer_object=_unigram(), unk_token="<unk>", bos_token="<s>",
                                       eos_token="</s>")
        fast.save_pretrained(folder)
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        _edit_json(folder / "tokenizer_config.json", add_bos_token=True, sep_token="<sep>", chat_template=INDENTED)
    else:
        raise ValueError(kind)
    return folder


KINDS = ("bpe", "wordpiece", "unigram")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return {kind: _build(kind, tmp_path_factory.mktemp(f"hf-{kind}")) for kind in KINDS}


@pytest.fixture(scope="module")
def refs(folders):
    from transformers import AutoTokenizer

    return {kind: AutoTokenizer.from_pretrained(str(path)) for kind, path in folders.items()}


@pytest.fixture(scope="module")
def toks(folders):
    return {kind: HFTokenizer(str(path)) for kind, path in folders.items()}


# --- ids against transformers ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_autotokenizer(kind, toks, refs):
    tok, ref = toks[kind], refs[kind]
    specials_added = 0
    for text in TEXTS:
        with_specials = ref(text)["input_ids"]
        without = ref(text, add_special_tokens=False)["input_ids"]
        assert tok.encode(text, add_special_tokens=True) == with_specials, text
        assert tok.encode(text, add_special_tokens=False) == without, text
        assert tok.encode(text) == without, text  # the document contract: no specials
        specials_added += len(with_specials) - len(without)
    assert tok.encode_batch(TEXTS) == [ref(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert tok.encode_batch(TEXTS, add_special_tokens=True) == ref(TEXTS)["input_ids"]
    # Every folder adds something with add_special_tokens=True, so both code paths are exercised.
    assert specials_added >= len(TEXTS)


def test_texts_reach_unknown_and_multibyte_paths(toks, refs):
    """The strings exercise what differs between kinds: byte-level pieces for CJK/emoji in BPE,
    [UNK]/<unk> in the others, normalization (lowercase, accents, NFKC)."""
    bpe, wp, uni = toks["bpe"], toks["wordpiece"], toks["unigram"]
    crab = bpe.encode("🦀")  # not in the corpus: byte pieces, no unknown token
    assert bpe.unk_id is None and len(crab) > 1 and bpe.decode(crab) == "🦀"
    assert wp.unk_id in wp.encode("🦀") and uni.unk_id in uni.encode("🦀")  # not in the corpus
    assert wp.encode("CAFÉ") == wp.encode("cafe")  # BertNormalizer lowercases and strips accents
    assert uni.encode("ﬁ") == uni.encode("fi")  # NFKC
    assert bpe.encode("") == wp.encode("") == uni.encode("") == []
    assert refs["wordpiece"]("")["input_ids"] == [wp.special_token_id("cls_token"), wp.eos_id]


@pytest.mark.parametrize("kind", KINDS)
def test_decode_equals_autotokenizer(kind, toks, refs):
    tok, ref = toks[kind], refs[kind]
    for text in TEXTS:
        ids = ref(text)["input_ids"]
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
        assert tok.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False), text
    with pytest.raises(ValueError, match=rf"token id {tok.vocab_size} is out of range for .*0\.\.{tok.vocab_size - 1}"):
        tok.decode([0, tok.vocab_size])


def test_decode_round_trip_and_cleanup(toks):
    bpe, wp = toks["bpe"], toks["wordpiece"]
    for text in TEXTS:
        if "<|" not in text:  # byte-level BPE is lossless; specials in the text are dropped on decode
            assert bpe.decode(bpe.encode(text)) == text
    assert bpe.decode([bpe.bos_id, *bpe.encode("hi"), bpe.eos_id, bpe.pad_id]) == "hi"
    # WordPiece decodes with spaces between pieces; clean_up_tokenization_spaces joins punctuation.
    assert wp.clean_up_tokenization_spaces and wp.decode(wp.encode("Hello, World!")) == "hello, world!"
    assert not bpe.clean_up_tokenization_spaces


# --- special tokens, vocabulary --------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_special_token_ids(kind, toks, refs):
    tok, ref = toks[kind], refs[kind]
    assert tok.bos_id == ref.bos_token_id and tok.eos_id == ref.eos_token_id and tok.unk_id == ref.unk_token_id
    if ref.pad_token_id is not None:
        assert (tok.pad_id, tok.pad_is_eos) == (ref.pad_token_id, False)
    else:
        assert (tok.pad_id, tok.pad_is_eos) == (tok.eos_id, True)
    assert tok.special_tokens == ref.special_tokens_map


def test_special_token_details(folders, toks, refs):
    bpe, wp, uni = toks["bpe"], toks["wordpiece"], toks["unigram"]
    assert (bpe.bos_id, bpe.eos_id, bpe.pad_id) == (0, 1, 2)
    tool = refs["bpe"].convert_tokens_to_ids("<|tool|>")
    assert bpe.eos_ids == [1, tool]  # generation_config.json's list, the config's eos first
    assert wp.bos_id is None and wp.eos_ids == [wp.eos_id] and wp.eos_id == refs["wordpiece"].sep_token_id
    assert uni.pad_is_eos and uni.pad_id == uni.eos_id and refs["unigram"].pad_token_id is None
    # <sep> is in the config only: transformers adds it as a special token, so do we.
    sep = refs["unigram"].convert_tokens_to_ids("<sep>")
    assert sep == uni.special_token_id("sep_token") == uni.vocab_size - 1
    assert "<sep>" not in (folders["unigram"] / "tokenizer.json").read_text(encoding="utf-8")
    assert uni.encode("a<sep>b") == refs["unigram"]("a<sep>b", add_special_tokens=False)["input_ids"]
    assert sep in uni.encode("a<sep>b")


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_size_is_highest_id_plus_one(kind, folders, toks, refs):
    tok, ref = toks[kind], refs[kind]
    assert tok.vocab_size == max(ref.get_vocab().values()) + 1 == len(ref)
    assert folder_vocab_size(folders[kind]) == tok.vocab_size  # the validator's torch-free reading
    assert tok.vocab_size > ref.vocab_size or kind == "wordpiece"  # transformers' vocab_size omits added tokens


def test_add_bos_defaults_follow_tokenizer_json(toks):
    bpe, wp, uni = toks["bpe"], toks["wordpiece"], toks["unigram"]
    assert (bpe.add_bos_default, bpe.add_eos_default) == (True, False)
    assert (wp.add_bos_default, wp.add_eos_default) == (False, True)  # [CLS] is not a bos token; [SEP] is eos
    # unigram's config says add_bos_token: true, but its tokenizer.json adds only </s>.
    assert (uni.add_bos_default, uni.add_eos_default) == (False, True)
    assert uni.encode("a b", add_special_tokens=True)[-1] == uni.eos_id


@pytest.mark.parametrize("kind,add_bos,add_eos", [
    (k, b, e) for k, (b, e) in itertools.product(("bpe", "unigram"), itertools.product((True, False), repeat=2))])
def test_add_bos_add_eos_equal_from_pretrained_kwargs(kind, add_bos, add_eos, folders):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(folders[kind]), add_bos_token=add_bos, add_eos_token=add_eos)
    tok = HFTokenizer(str(folders[kind]), add_bos=add_bos, add_eos=add_eos)
    for text in TEXTS[:9]:
        assert tok.encode(text, add_special_tokens=True) == ref(text)["input_ids"], text
        assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    ids = tok.encode("x", add_special_tokens=True)
    assert (ids[0] == tok.bos_id, ids[-1] == tok.eos_id) == (add_bos, add_eos)


def test_add_bos_needs_a_bos_token(folders, toks):
    with pytest.raises(ValueError, match=r"add_bos=True: .*tokenizer_config.json names no bos_token"):
        HFTokenizer(str(folders["wordpiece"]), add_bos=True)
    with pytest.raises(ValueError, match=r"add_eos='yes': must be true, false or null"):
        HFTokenizer(str(folders["bpe"]), add_eos="yes")
    # Only one side given: the other stays as the folder does.
    tok = HFTokenizer(str(folders["unigram"]), add_bos=True)
    assert tok.encode("a", add_special_tokens=True) == [tok.bos_id, *tok.encode("a"), tok.eos_id]


# --- chat templates ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bpe", "unigram"])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_equals_autotokenizer(kind, generation_prompt, toks, refs):
    tok, ref = toks[kind], refs[kind]
    for messages in (MESSAGES, MESSAGES[1:2]):
        got = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt)
        want = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        assert got == want
        assert got  # a template that renders nothing would make the comparison empty


def test_chat_template_details(folders, toks, refs):
    bpe, uni = toks["bpe"], toks["unigram"]
    text = bpe.apply_chat_template(MESSAGES[1:2], add_generation_prompt=True)
    assert text == "<|bos|><|im_start|>user\n  Grüß dich — 東京は? 🙂 <|im_end|>\n<|im_start|>assistant\n"
    text = uni.apply_chat_template(MESSAGES[1:2])
    # lstrip_blocks/trim_blocks remove the indentation and newlines of the block tags; tojson keeps non-ASCII.
    assert text == ('    [1/1] USER: Grüß dich — 東京は? 🙂\n'
                    'meta={"lang": "de/ja", "emoji": "🙂", "n": [1, 2]}')
    assert bpe.chat_template == (folders["bpe"] / "chat_template.jinja").read_text(encoding="utf-8")
    # An explicit template text, with extra variables, as transformers passes them.
    custom = "{{ greeting }} {{ messages[0].content }}{{ eos_token }}"
    assert bpe.apply_chat_template(MESSAGES[:1], chat_template=custom, greeting="hi") == (
        refs["bpe"].apply_chat_template(MESSAGES[:1], tokenize=False, chat_template=custom, greeting="hi"))
    # None-valued keys are dropped; a message's reasoning is seen as both `thinking` and `reasoning_content`.
    probe = ("{% for m in messages %}{{ m.role }}|{{ m.thinking | default('-') }}|"
             "{{ m.reasoning_content | default('-') }}|{{ 'T' if m.tool_calls is defined else 'F' }}\n{% endfor %}")
    chat = [*MESSAGES, {"role": "assistant", "content": "x", "reasoning": "because"},
            {"role": "assistant", "content": "y", "thinking": "hmm", "tool_calls": [{"name": "f"}]}]
    got = bpe.apply_chat_template(chat, chat_template=probe)
    assert got == refs["bpe"].apply_chat_template(chat, tokenize=False, chat_template=probe)
    assert got.splitlines()[2:] == ["assistant|-|-|F", "user|-|-|F", "assistant|because|because|F",
                                    "assistant|hmm|hmm|T"]


def test_chat_template_errors(folders, toks, refs):
    bad = [{"role": "robot", "content": "beep"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role: robot"):
        refs["bpe"].apply_chat_template(bad, tokenize=False)
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role: robot"):
        toks["bpe"].apply_chat_template(bad)
    with pytest.raises(ValueError, match=rf"{folders['wordpiece']}: no chat template: neither chat_template.jinja"):
        toks["wordpiece"].apply_chat_template(MESSAGES)
    with pytest.raises(ValueError, match="messages is empty"):
        toks["bpe"].apply_chat_template([])
    # The sandbox: no route to Python internals.
    with pytest.raises(jinja2.exceptions.SecurityError):
        toks["bpe"].apply_chat_template(MESSAGES, chat_template="{{ messages.__class__.__mro__ }}")
    with pytest.raises(jinja2.exceptions.SecurityError, match="'_x' is not allowed"):
        toks["bpe"].apply_chat_template(MESSAGES, chat_template="{% set ns = namespace(_x=1) %}")


def test_several_chat_templates(tmp_path, folders):
    folder = tmp_path / "multi"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((folders["bpe"] / name).read_bytes())
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "short.jinja").write_text("{{ messages[0].content }}")
    (folder / "additional_chat_templates" / "tool_use.jinja").write_text("T:{{ messages[0].content }}")
    tok = HFTokenizer(str(folder))
    with pytest.raises(ValueError, match="several chat templates and none named 'default'.*short, tool_use"):
        tok.apply_chat_template(MESSAGES)
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(folder))
    got = tok.apply_chat_template(MESSAGES, chat_template="short")
    assert got == ref.apply_chat_template(MESSAGES, tokenize=False, chat_template="short") == "You are terse."


# --- save, load, fingerprint ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path, folders, toks):
    from transformers import AutoTokenizer

    tok = toks[kind]
    tok.save(tmp_path / "tokenizer")
    meta = json.loads((tmp_path / "tokenizer" / META_FILE).read_text())
    assert meta["kind"] == "hf" and meta["fingerprint"] == tok.fingerprint
    back = load_tokenizer(tmp_path / "tokenizer")
    assert isinstance(back, HFTokenizer) and back.path == tmp_path / "tokenizer"
    assert back.fingerprint == tok.fingerprint
    assert (back.vocab_size, back.bos_id, back.eos_ids, back.pad_id) == (tok.vocab_size, tok.bos_id, tok.eos_ids,
                                                                         tok.pad_id)
    assert back.encode_batch(TEXTS) == tok.encode_batch(TEXTS)
    assert back.chat_template == tok.chat_template
    # The saved folder is still a Hugging Face tokenizer folder.
    ref = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    assert ref(TEXTS)["input_ids"] == tok.encode_batch(TEXTS, add_special_tokens=True)


def test_save_keeps_overrides_and_refuses_edited_files(tmp_path, folders):
    tok = HFTokenizer(str(folders["unigram"]), add_bos=True, add_eos=False)
    tok.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert (back.add_bos, back.add_eos) == (True, False)
    assert back.encode("a b", add_special_tokens=True) == tok.encode("a b", add_special_tokens=True)
    assert back.encode("a b", add_special_tokens=True)[0] == tok.bos_id
    tok.save(tmp_path)  # saving onto its own folder rewrites only the metadata
    assert load_tokenizer(tmp_path).fingerprint == tok.fingerprint
    _edit_json(tmp_path / "tokenizer_config.json", pad_token="<unk>")
    with pytest.raises(ValueError, match=rf"{tmp_path / META_FILE}: saved with fingerprint"):
        load_tokenizer(tmp_path)


def test_fingerprint_is_stable_and_tells_tokenizers_apart(folders, toks):
    prints = {kind: tok.fingerprint for kind, tok in toks.items()}
    assert len(set(prints.values())) == 3 and all(p.startswith("hf-") for p in prints.values())
    assert HFTokenizer(str(folders["bpe"])).fingerprint == prints["bpe"]
    assert HFTokenizer(str(folders["bpe"]), add_bos=False).fingerprint != prints["bpe"]
    assert HFTokenizer(str(folders["bpe"]), add_bos=True).fingerprint == prints["bpe"]  # what it already does


def test_pickles_for_datasets_map(toks):
    tok = pickle.loads(pickle.dumps(toks["bpe"]))
    assert tok.encode_batch(TEXTS) == toks["bpe"].encode_batch(TEXTS) and tok.fingerprint == toks["bpe"].fingerprint
    tok.prepare(lambda: pytest.fail("prepare must not read the data"), "fp")


# --- bad folders ---------------------------------------------------------------------------------------

def test_bad_folders_name_the_path(tmp_path, folders):
    with pytest.raises(InputError, match=rf"{tmp_path / 'nope'} does not exist: tokenizer.path must be"):
        HFTokenizer(str(tmp_path / "nope"))
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(InputError, match=r"file.json is a file: tokenizer.path must be the folder"):
        HFTokenizer(str(tmp_path / "file.json"))
    with pytest.raises(InputError, match=rf"{tmp_path / 'tokenizer.json'} not found"):
        HFTokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'tokenizer.json'}: not readable JSON"):
        folder_vocab_size(tmp_path)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'tokenizer.json'}: the tokenizers library cannot read it"):
        HFTokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_bytes((folders["wordpiece"] / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"unk_token": "[UNK]"}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json: names no eos_token \(keys: unk_token\)"):
        HFTokenizer(str(tmp_path))
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match=r"tokenizer_config.json: not found, so no eos_token is named"):
        HFTokenizer(str(tmp_path))


# --- the config validator -------------------------------------------------------------------------------

def test_validator_reads_the_folder_vocab(folders, toks):
    path = override_value(str(folders["bpe"]))
    need = toks["bpe"].vocab_size
    cfg = load(["tokenizer=hf", f"tokenizer.path={path}", f"model.vocab_size={need}"])
    assert cfg.tokenizer._target_ == "rizzrun.tokenizers.hf.HFTokenizer"
    with pytest.raises(ConfigError) as info:
        load(["tokenizer=hf", f"tokenizer.path={path}", f"model.vocab_size={need - 1}"])
    assert info.value.problems == [
        f"model.vocab_size={need - 1}: smaller than the tokenizer's vocabulary (rizzrun.tokenizers.hf.HFTokenizer: "
        f"{need} ids); allowed: null (take the tokenizer's) or an integer >= {need}"]


def test_validator_requires_a_path_and_a_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(["tokenizer=hf"])
    assert info.value.problems == ["tokenizer.path=???: required value is not set; set it, e.g. tokenizer.path=VALUE"]
    with pytest.raises(ConfigError) as info:
        load(["tokenizer=hf", f"tokenizer.path={override_value(str(tmp_path))}"])
    assert info.value.problems == [
        f"tokenizer.path='{tmp_path}': {tmp_path / 'tokenizer.json'} not found: a Hugging Face tokenizer folder "
        f"(what transformers' save_pretrained writes) holds tokenizer.json; point tokenizer.path at such a folder"]


PROBE = """
import sys
from rizzrun.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as e:
    code = e.code or 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "tokenizers", "lightning"})
print("HEAVY", heavy)
sys.exit(code)
"""


def _validate(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIZZRUN_OUTPUTS": "/tmp/rizzrun-unused"}
    return subprocess.run([sys.executable, "-c", PROBE, "validate", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_validate_command_names_a_missing_folder_without_torch():
    result = _validate("tokenizer=hf", "tokenizer.path=/nope")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: tokenizer.path='/nope': /nope does not exist: tokenizer.path must be a "
                                    "local folder holding tokenizer.json"), result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY []"


def test_validate_command_reads_vocab_without_torch_or_tokenizers(folders, toks):
    need = toks["unigram"].vocab_size
    path = override_value(str(folders["unigram"]))
    result = _validate("tokenizer=hf", f"tokenizer.path={path}", f"model.vocab_size={need - 1}")
    assert result.returncode == 2, result.stderr
    assert f"model.vocab_size={need - 1}: smaller than the tokenizer's vocabulary" in result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY []"
    result = _validate("tokenizer=hf", f"tokenizer.path={path}")
    assert (result.returncode, result.stdout.splitlines()) == (0, ["ok", "HEAVY []"]), result.stderr


def test_hf_module_imports_no_torch(folders):
    code = (
        "import sys\n"
        "from rizzrun.tokenizers.hf import HFTokenizer\n"
        "t = HFTokenizer(sys.argv[1])\n"
        "assert t.decode(t.encode('hello world')) == 'hello world'\n"
        "assert t.apply_chat_template([{'role': 'user', 'content': 'hi'}]).startswith('<|bos|>')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folders["bpe"])], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
