"""HFTokenizer: a local Hugging Face tokenizer folder, encoded the way `transformers` does.

Reads the folder (`rizzrun.tokenizers.hf_folder`, plain JSON) and builds the `tokenizers`
pipeline from it, no `transformers`, no torch, reproducing what
`transformers.AutoTokenizer.from_pretrained(folder)` does for the generic fast tokenizer class
(`PreTrainedTokenizerFast`, called `TokenizersBackend` in transformers 5):

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
as written. Chat templates render in a sandbox (`rizzrun.tokenizers.chat_template`).

`folder_vocab_size(path)` (re-exported from hf_folder) reads the vocabulary size from the JSON
files alone, without importing `tokenizers`: the config validator uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rizzrun.errors import InputError
from rizzrun.files import write_atomic
from rizzrun.tokenizers.chat_template import compile_template, template_messages
from rizzrun.tokenizers.hf_folder import (
    CHAT_TEMPLATE_DIR,
    CHAT_TEMPLATE_FILE,
    CONFIG_FILE,
    FOLDER_FILES,
    GENERATION_CONFIG_FILE,
    NAMED_TOKENS,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_FILE,
    chat_templates,
    config_special_tokens,
    content,
    folder_vocab_size,
    generation_eos_ids,
    one_line,
    read_config,
    read_json,
    tokenizer_folder,
    tokens_to_add,
)

__all__ = ["HFTokenizer", "folder_vocab_size", "TOKENIZER_FILE", "CONFIG_FILE", "SPECIAL_TOKENS_MAP_FILE",
           "GENERATION_CONFIG_FILE", "CHAT_TEMPLATE_FILE", "CHAT_TEMPLATE_DIR", "NAMED_TOKENS"]


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
                raise InputError(f"tokenizer.{name}={value!r}: must be true, false or null (as the folder does)")
        from tokenizers import AddedToken, Tokenizer

        folder = tokenizer_folder(path)
        self.path = folder
        self.add_bos, self.add_eos = add_bos, add_eos
        source = folder / TOKENIZER_FILE
        if not source.is_file():
            read_json(source, required=True)  # raises, naming the file
        self._tokenizer_json = source.read_bytes()
        try:
            tok = Tokenizer.from_str(self._tokenizer_json.decode("utf-8"))
        except Exception as err:  # noqa: BLE001 - tokenizers raises Exception on bad files
            raise InputError(f"{source}: the tokenizers library cannot read it ({one_line(err)}); point "
                             f"tokenizer.path at a folder whose {TOKENIZER_FILE} transformers wrote") from err
        config = read_config(folder)
        self.tokenizer_class = config.get("tokenizer_class")
        # transformers encodes with neither truncation nor padding unless asked.
        tok.no_truncation()
        tok.no_padding()
        added = {t.content for t in tok.get_added_tokens_decoder().values()}
        for text, props in tokens_to_add(config, added):
            tok.add_tokens([AddedToken(text, **props)])
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        tok.encode_special_tokens = self.split_special_tokens
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False)) and (
            type(tok.model).__name__ != "BPE"
            or bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)))
        self._tok = tok

        self._special_tokens = {name: content(v) for name, v in config_special_tokens(config).items()}
        ids = {name: tok.token_to_id(text) for name, text in self._special_tokens.items()}
        self.bos_token, self.eos_token = self._special_tokens.get("bos_token"), self._special_tokens.get("eos_token")
        self.bos_id, self.unk_id = ids.get("bos_token"), ids.get("unk_token")
        if ids.get("eos_token") is None:
            found = (f"names no eos_token (keys: {', '.join(sorted(config)) or 'none'})"
                     if (folder / CONFIG_FILE).is_file() else "not found, so no eos_token is named")
            raise InputError(
                f"{folder / CONFIG_FILE}: {found}; rizzrun ends documents with EOS, so the folder must name one, "
                f"e.g. \"eos_token\": \"</s>\" in {CONFIG_FILE}"
            )
        self.eos_id = ids["eos_token"]
        self.eos_ids = list(dict.fromkeys([self.eos_id, *generation_eos_ids(folder)]))
        self.pad_is_eos = ids.get("pad_token") is None
        self.pad_id = self.eos_id if self.pad_is_eos else ids["pad_token"]
        self.pad_token = self.eos_token if self.pad_is_eos else self._special_tokens["pad_token"]

        self.add_bos_default, self.add_eos_default = self._adds()
        if add_bos is not None or add_eos is not None:
            self._set_post_processor(self.add_bos_default if add_bos is None else add_bos,
                                     self.add_eos_default if add_eos is None else add_eos)
        self.chat_template = chat_templates(folder, config)
        self._compiled: dict[str, Any] = {}  # template text -> compiled template
        vocab = tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0

    def __getstate__(self) -> dict:
        # Compiled templates hold local functions, which do not pickle (datasets' map workers).
        return {**self.__dict__, "_compiled": {}}

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
            raise InputError(f"tokenizer.add_bos=True: {self.path / CONFIG_FILE} names no bos_token to add; "
                             f"set tokenizer.add_bos=null or false")

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
        context.update(messages=template_messages(messages), add_generation_prompt=add_generation_prompt)
        if source not in self._compiled:
            self._compiled[source] = compile_template(source)
        return self._compiled[source].render(**context)

    # -- persistence ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Copy the folder's files (a folder `AutoTokenizer.from_pretrained` still loads) and
        write rizzrun's metadata file, so `load_tokenizer(directory)` rebuilds this tokenizer."""
        from . import META_FILE

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        same = directory.resolve() == self.path.resolve()
        if not same:
            names = [n for n in FOLDER_FILES if (self.path / n).is_file()]
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
