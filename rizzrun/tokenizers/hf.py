"""HFTokenizer: a local Hugging Face tokenizer folder, encoded the way `transformers` does.

A folder written by `transformers`' `save_pretrained` (or downloaded from the Hub) holds
`tokenizer.json` (the `tokenizers` pipeline: normalizer, pre-tokenizer, model, post-processor,
decoder, added tokens), `tokenizer_config.json` (named special tokens, chat template, a few
flags), sometimes `special_tokens_map.json`, `chat_template.jinja` and `generation_config.json`.
This module reads them with the `tokenizers` library and `jinja2`, no `transformers`, no torch,
and reproduces what `transformers.AutoTokenizer.from_pretrained(folder)` does for the generic
fast tokenizer class (`PreTrainedTokenizerFast`, called `TokenizersBackend` in transformers 5):

- `tokenizer.json` is the source of truth for what `add_special_tokens=True` adds: its
  post-processor (`add_bos_token` / `add_eos_token` in tokenizer_config.json are ignored
  when tokenizer.json exists, as transformers ignores them).
- Named special tokens (bos/eos/unk/sep/pad/cls/mask, model-specific `*_token` keys, extra
  special tokens) that tokenizer.json does not list as added tokens are added as special
  tokens, as transformers adds them: a string equal to one of them is split out of the text
  and decoded away with the specials. Truncation and padding stored in tokenizer.json are
  switched off; `split_special_tokens` and `clean_up_tokenization_spaces` are honoured.

Model-specific tokenizer classes that rebuild the pipeline in Python (tokenizer_class
`LlamaTokenizer` and the like in transformers 5) are read as the generic class: tokenizer.json
as written.

`folder_vocab_size(path)` reads the vocabulary size from the JSON files alone, without
importing `tokenizers`: the config validator uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from rizzrun.files import write_atomic

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
# The named special tokens of transformers, in the order it adds missing ones.
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Copied by `save` when present; everything HFTokenizer reads.
_FOLDER_FILES = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, GENERATION_CONFIG_FILE, CHAT_TEMPLATE_FILE)


# --- reading the folder (plain JSON, no `tokenizers`) ---------------------------------------------

def _read_json(path: Path, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise FileNotFoundError(
                f"{path} not found: a Hugging Face tokenizer folder (what transformers' save_pretrained "
                f"writes) holds {TOKENIZER_FILE}; point tokenizer.path at such a folder"
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err


def _folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"{folder} does not exist: tokenizer.path must be a local folder holding {TOKENIZER_FILE} "
            f"(and usually {CONFIG_FILE}), e.g. one written by transformers' save_pretrained"
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{folder} is a file: tokenizer.path must be the folder that holds {TOKENIZER_FILE}, not a file in it"
        )
    return folder


def _content(value: Any) -> str | None:
    """The text of a token given as a string or as a serialized AddedToken ({"content": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _token_props(value: Any) -> dict:
    """AddedToken keyword arguments of a serialized token (flags other than the content)."""
    if not isinstance(value, Mapping):
        return {}
    keys = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return {k: bool(value[k]) for k in keys if k in value}


def _read_config(folder: Path) -> dict:
    """tokenizer_config.json, with special_tokens_map.json laid over it when the config has no
    `added_tokens_decoder` (older folders), as transformers merges them."""
    config = _read_json(folder / CONFIG_FILE, required=False)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}")
    config = dict(config)
    if "added_tokens_decoder" not in config:
        legacy = _read_json(folder / SPECIAL_TOKENS_MAP_FILE, required=False)
        if isinstance(legacy, dict):
            for key, value in legacy.items():
                if key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                    old = config.get(key) if isinstance(config.get(key), list) else []
                    config[key] = old + [v for v in value if _content(v) not in {_content(o) for o in old}]
                else:
                    config[key] = value
    return config


def _config_special_tokens(config: Mapping) -> dict[str, Any]:
    """{name: token} of the named and model-specific special tokens a config declares (the
    variables a chat template sees: bos_token, eos_token, ..., image_token); tokens as given
    (a string or a serialized AddedToken)."""
    out: dict[str, Any] = {}
    for name in NAMED_TOKENS:
        if _content(config.get(name)) is not None:
            out[name] = config[name]
    for name, value in config.items():
        if name not in NAMED_TOKENS and name.endswith("_token") and _content(value) is not None:
            out[name] = value
    extra = config.get("extra_special_tokens")
    if isinstance(extra, Mapping):
        out.update({str(k): v for k, v in extra.items() if _content(v) is not None})
    return out


def _extra_special_tokens(config: Mapping) -> list[Any]:
    extra = config.get("extra_special_tokens")
    if not isinstance(extra, list):
        extra = config.get("additional_special_tokens")
    return [v for v in extra if _content(v) is not None] if isinstance(extra, list) else []


def _tokens_to_add(config: Mapping, added: set[str]) -> list[tuple[str, dict]]:
    """(content, AddedToken flags) of the tokens the config names but tokenizer.json does not
    list as added tokens, in the order transformers adds them: the config's own
    `added_tokens_decoder` (by id), the named/model-specific special tokens, the extra ones."""
    out: list[tuple[str, dict]] = []
    seen = set(added)
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        def index(item):
            try:
                return int(item[0])
            except (TypeError, ValueError):
                return 0

        for _, value in sorted(decoder.items(), key=index):
            text = _content(value)
            if text is not None and text not in seen:
                out.append((text, _token_props(value)))
                seen.add(text)
    for value in [*_config_special_tokens(config).values(), *_extra_special_tokens(config)]:
        text = _content(value)
        if text is not None and text not in seen:
            out.append((text, {**_token_props(value), "special": True}))
            seen.add(text)
    return out


def _model_tokens(tokenizer_json: Mapping, source: Path) -> tuple[dict[str, int] | set[str], int]:
    """(the model's token strings, the model's highest id + 1) from tokenizer.json's `model`."""
    model = tokenizer_json.get("model")
    vocab = model.get("vocab") if isinstance(model, Mapping) else None
    if isinstance(vocab, Mapping):  # BPE, WordPiece, WordLevel: {token: id}
        ids = [i for i in vocab.values() if isinstance(i, int)]
        return set(vocab), (max(ids) + 1 if ids else 0)
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        return {str(entry[0]) for entry in vocab if isinstance(entry, list) and entry}, len(vocab)
    raise ValueError(f"{source}: 'model.vocab' is missing or neither a mapping nor a list; is this a tokenizers file?")


def folder_vocab_size(path: str | os.PathLike) -> int:
    """The size an embedding must have to cover every id the folder's tokenizer can produce
    (highest id + 1, added tokens and the special tokens transformers adds included), read
    from the JSON files without importing `tokenizers`. Raises FileNotFoundError /
    NotADirectoryError / ValueError naming the path."""
    folder = _folder(path)
    source = folder / TOKENIZER_FILE
    data = _read_json(source, required=True)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    model_tokens, size = _model_tokens(data, source)
    added = [t for t in data.get("added_tokens") or [] if isinstance(t, Mapping)]
    for token in added:
        if isinstance(token.get("id"), int):
            size = max(size, token["id"] + 1)
    contents = {t.get("content") for t in added}
    # Tokens transformers adds that are in neither vocabulary take the next free ids.
    size += sum(1 for text, _ in _tokens_to_add(_read_config(folder), contents) if text not in model_tokens)
    return size


def _chat_templates(folder: Path, config: Mapping) -> str | dict[str, str] | None:
    """The folder's chat template(s): chat_template.jinja and additional_chat_templates/*.jinja
    take priority over tokenizer_config.json's `chat_template` (a string or a list of
    {"name", "template"}), as in transformers. A dict when there are several, by name."""
    files: dict[str, str] = {}
    if (folder / CHAT_TEMPLATE_FILE).is_file():
        files["default"] = (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if (folder / CHAT_TEMPLATE_DIR).is_dir():
        for file in sorted((folder / CHAT_TEMPLATE_DIR).glob("*.jinja")):
            files[file.name.removesuffix(".jinja")] = file.read_text(encoding="utf-8")
    if files:
        return files["default"] if list(files) == ["default"] else files
    template = config.get("chat_template")
    if isinstance(template, list):
        return {t["name"]: t["template"] for t in template if isinstance(t, Mapping) and "name" in t}
    return template if isinstance(template, str) else None


def _generation_eos_ids(folder: Path) -> list[int]:
    """generation_config.json's eos_token_id (an int or a list), when the folder has one."""
    config = _read_json(folder / GENERATION_CONFIG_FILE, required=False)
    value = config.get("eos_token_id") if isinstance(config, dict) else None
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


# --- chat templates --------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _compile_template(source: str):
    """A chat template compiled in a sandbox with what transformers gives templates:
    trim_blocks + lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, a `tojson`
    that does not HTML-escape, and the `{% generation %}` tag (rendered as its body)."""
    import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """jinja's namespace, refusing underscore names (no route to Python internals)."""

        def __init__(*args, **kwargs):
            self, rest = args[0], args[1:]
            values = dict(*rest, **kwargs)
            for name in values:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, values)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat template: namespace attribute {name!r} is not allowed")

    def raise_exception(text):
        raise jinja2.exceptions.TemplateError(text)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.globals["namespace"] = Namespace
    return env.from_string(source)


_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _template_messages(messages: Sequence[Mapping]) -> list[dict]:
    """Messages as a template sees them: plain dicts, keys whose value is None dropped, the
    reasoning of a message under both `reasoning_content` and `thinking`."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"apply_chat_template: message {i} is a {type(message).__name__}; "
                            f"expected a mapping such as {{'role': 'user', 'content': 'Hi'}}")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_KEYS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


# --- the tokenizer -----------------------------------------------------------------------------------

def _cleanup(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before punctuation and English
    contractions (applied when the folder sets clean_up_tokenization_spaces)."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


class HFTokenizer:
    """A local Hugging Face tokenizer folder (`tokenizer.json` + `tokenizer_config.json`).

    path: the folder. add_bos / add_eos: what `encode(text, add_special_tokens=True)` adds.
        None (default) keeps the folder's own post-processor, so the ids equal
        `AutoTokenizer.from_pretrained(path)(text)["input_ids"]`; True/False replace it by
        `[bos] text [eos]` with each part on or off (None there = as the folder does), like
        passing add_bos_token= / add_eos_token= to `from_pretrained`. `add_bos_default` and
        `add_eos_default` say what the folder itself does.

    vocab_size: highest id + 1, added tokens included: the rows the model's embedding needs
        (it can exceed the model vocabulary the folder's config.json reports, never the reverse).
    bos_id: None when the folder names no bos_token. eos_id: the config's eos_token (required:
        documents are joined with it); eos_ids: eos_id first, then the other ids of
        generation_config.json's eos_token_id (Llama-3 style folders stop on several).
    pad_id: the pad_token's id; a folder without one falls back to eos_id (`pad_is_eos`).

    `encode(text)` gives the ids of a document without special tokens (the packer joins
    documents with EOS); a string equal to a special token inside the text is still read as
    that token unless the folder sets split_special_tokens, as in transformers.
    """

    def __init__(self, path: str, add_bos: bool | None = None, add_eos: bool | None = None):
        for name, value in (("add_bos", add_bos), ("add_eos", add_eos)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"HFTokenizer {name}={value!r}: must be true, false or null (as the folder does)")
        from tokenizers import AddedToken, Tokenizer

        folder = _folder(path)
        self.path = folder
        self.add_bos, self.add_eos = add_bos, add_eos
        source = folder / TOKENIZER_FILE
        if not source.is_file():
            _read_json(source, required=True)  # raises, naming the file
        self._tokenizer_json = source.read_bytes()
        try:
            tok = Tokenizer.from_str(self._tokenizer_json.decode("utf-8"))
        except Exception as err:  # noqa: BLE001 - tokenizers raises Exception on bad files
            raise ValueError(f"{source}: the tokenizers library cannot read it ({err})") from err
        config = _read_config(folder)
        self.tokenizer_class = config.get("tokenizer_class")
        # transformers encodes with neither truncation nor padding unless asked.
        tok.no_truncation()
        tok.no_padding()
        added = {t.content for t in tok.get_added_tokens_decoder().values()}
        for text, props in _tokens_to_add(config, added):
            tok.add_tokens([AddedToken(text, **props)])
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        tok.encode_special_tokens = self.split_special_tokens
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False)) and (
            type(tok.model).__name__ != "BPE"
            or bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)))
        self._tok = tok

        self._special_tokens = {name: _content(v) for name, v in _config_special_tokens(config).items()}
        ids = {name: tok.token_to_id(text) for name, text in self._special_tokens.items()}
        self.bos_token, self.eos_token = self._special_tokens.get("bos_token"), self._special_tokens.get("eos_token")
        self.bos_id, self.unk_id = ids.get("bos_token"), ids.get("unk_token")
        if ids.get("eos_token") is None:
            found = (f"names no eos_token (keys: {', '.join(sorted(config)) or 'none'})"
                     if (folder / CONFIG_FILE).is_file() else "not found, so no eos_token is named")
            raise ValueError(
                f"{folder / CONFIG_FILE}: {found}; rizzrun ends documents with EOS, so the folder must name one, "
                f"e.g. \"eos_token\": \"</s>\" in {CONFIG_FILE}"
            )
        self.eos_id = ids["eos_token"]
        self.eos_ids = list(dict.fromkeys([self.eos_id, *_generation_eos_ids(folder)]))
        self.pad_is_eos = ids.get("pad_token") is None
        self.pad_id = self.eos_id if self.pad_is_eos else ids["pad_token"]
        self.pad_token = self.eos_token if self.pad_is_eos else self._special_tokens["pad_token"]

        self.add_bos_default, self.add_eos_default = self._adds()
        if add_bos is not None or add_eos is not None:
            self._set_post_processor(self.add_bos_default if add_bos is None else add_bos,
                                     self.add_eos_default if add_eos is None else add_eos)
        self.chat_template = _chat_templates(folder, config)
        vocab = tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0

    def _adds(self) -> tuple[bool, bool]:
        """Whether the folder's post-processor puts BOS first / EOS last in a single sequence."""
        probe = "a"
        plain = self._tok.encode(probe, add_special_tokens=False).ids
        full = self._tok.encode(probe, add_special_tokens=True).ids
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
        prefix, suffix = full[:start], full[start + len(plain):]
        return (self.bos_id is not None and prefix[:1] == [self.bos_id],
                suffix[-1:] == [self.eos_id])

    def _set_post_processor(self, bos: bool, eos: bool) -> None:
        """`[bos] $A [eos]` (pair: `[bos] $A [eos] [bos] $B [eos]`), each part on or off."""
        from tokenizers import processors

        if bos and self.bos_id is None:
            raise ValueError(f"HFTokenizer add_bos=True: {self.path / CONFIG_FILE} names no bos_token to add")

        def template(seq: str, type_id: int) -> list[str]:
            return ([f"{self.bos_token}:{type_id}"] if bos else []) + [f"${seq}:{type_id}"] + (
                [f"{self.eos_token}:{type_id}"] if eos else [])

        specials = ([(self.bos_token, self.bos_id)] if bos else []) + ([(self.eos_token, self.eos_id)] if eos else [])
        self._tok.post_processor = processors.TemplateProcessing(
            single=template("A", 0), pair=template("A", 0) + template("B", 1), special_tokens=specials)

    # -- the tokenizer interface ---------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the pipeline as used (tokenizer.json with the added specials and the
        add_bos/add_eos post-processor) and the config flags that change ids: equal
        fingerprints encode identically."""
        digest = hashlib.sha256(self._tok.to_str().encode("utf-8"))
        flags = {"split_special_tokens": self.split_special_tokens, "cleanup": self.clean_up_tokenization_spaces,
                 "eos_ids": self.eos_ids, "pad_id": self.pad_id, "bos_id": self.bos_id}
        digest.update(json.dumps(flags, sort_keys=True).encode("utf-8"))
        return "hf-" + digest.hexdigest()[:32]

    @property
    def special_tokens(self) -> dict[str, str]:
        """{name: text} of the folder's special tokens (bos_token, eos_token, ...)."""
        return dict(self._special_tokens)

    def special_token_id(self, name: str) -> int | None:
        """The id of special token `name` ("cls_token", "sep_token", ...), None if the folder has none."""
        text = self._special_tokens.get(name)
        return None if text is None else self._tok.token_to_id(text)

    def prepare(self, texts: Callable[[], Iterable[str]], fingerprint: str) -> None:
        """Nothing to learn: the folder's tokenizer is used as it is."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`. add_special_tokens=False (default): no BOS/EOS, the document contract
        of every rizzrun tokenizer; True: what `AutoTokenizer(text)["input_ids"]` gives."""
        if not isinstance(text, str):
            raise TypeError(f"HFTokenizer.encode: expected a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        """`encode` of each text; batched calls run in parallel in Rust."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`, special tokens dropped (as `AutoTokenizer.decode(ids,
        skip_special_tokens=True)`)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for {self.path} (valid: 0..{self.vocab_size - 1})")
        text = self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
        return _cleanup(text) if self.clean_up_tokenization_spaces else text

    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = False,
                            chat_template: str | None = None, **variables: Any) -> str:
        """The folder's chat template rendered for `messages` ([{"role", "content"}, ...]), as
        `AutoTokenizer.apply_chat_template(messages, tokenize=False, ...)` renders it: the
        template sees `messages`, `add_generation_prompt`, `tools`/`documents` (None unless
        given), the special tokens (`bos_token`, `eos_token`, ...) and `variables`.
        chat_template: the name of one of several templates, or a template's text."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is None:
                if "default" not in templates:
                    raise ValueError(f"{self.path}: several chat templates and none named 'default'; pass "
                                     f"chat_template=NAME, one of {', '.join(sorted(templates))}")
                chat_template = "default"
            source = templates.get(chat_template, chat_template)
        elif chat_template is not None:
            source = chat_template
        elif templates is None:
            raise ValueError(
                f"{self.path}: no chat template: neither {CHAT_TEMPLATE_FILE}, {CHAT_TEMPLATE_DIR}/ nor a "
                f"'chat_template' key in {CONFIG_FILE}; add one there or pass chat_template=TEMPLATE_TEXT"
            )
        else:
            source = templates
        if not messages:
            raise ValueError("apply_chat_template: messages is empty; give at least one message")
        context = {"tools": None, "documents": None, **self._special_tokens, **variables}
        context.update(messages=_template_messages(messages), add_generation_prompt=add_generation_prompt)
        return _compile_template(source).render(**context)

    # -- persistence ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Copy the folder's files (a folder `AutoTokenizer.from_pretrained` still loads) and
        write rizzrun's metadata file, so `load_tokenizer(directory)` rebuilds this tokenizer."""
        from . import META_FILE

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        same = directory.resolve() == self.path.resolve()
        if not same:
            names = [n for n in _FOLDER_FILES if (self.path / n).is_file()]
            templates = self.path / CHAT_TEMPLATE_DIR
            if templates.is_dir():
                names += [f"{CHAT_TEMPLATE_DIR}/{p.name}" for p in sorted(templates.glob("*.jinja"))]
            for name in names:
                data = self._tokenizer_json if name == TOKENIZER_FILE else (self.path / name).read_bytes()
                write_atomic(directory / name, data)
        meta = {"kind": "hf", "add_bos": self.add_bos, "add_eos": self.add_eos, "source": str(self.path),
                "vocab_size": self.vocab_size, "fingerprint": self.fingerprint}
        write_atomic(directory / META_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> HFTokenizer:
        from . import META_FILE

        directory = Path(directory)
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tok = cls(str(directory), add_bos=meta.get("add_bos"), add_eos=meta.get("add_eos"))
        if meta.get("fingerprint") != tok.fingerprint:
            raise ValueError(
                f"{meta_path}: saved with fingerprint {meta.get('fingerprint')!r}, but the files beside it give "
                f"{tok.fingerprint!r} (edited files, or a different tokenizers version); ids would not match the run"
            )
        return tok

    def __repr__(self) -> str:
        return f"HFTokenizer(path={str(self.path)!r}, vocab_size={self.vocab_size})"
