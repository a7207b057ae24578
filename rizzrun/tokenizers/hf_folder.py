"""Reading a Hugging Face tokenizer folder from its JSON files alone: no `tokenizers`, no
`transformers`, no torch (the config validator uses `folder_vocab_size` before anything heavy).

A folder written by `transformers`' `save_pretrained` (or downloaded from the Hub) holds
`tokenizer.json` (the `tokenizers` pipeline), `tokenizer_config.json` (named special tokens,
chat template, a few flags), sometimes `special_tokens_map.json`, `chat_template.jinja`,
`additional_chat_templates/*.jinja` and `generation_config.json`. The functions here merge them
the way `transformers.AutoTokenizer.from_pretrained(folder)` does for its generic fast class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rizzrun.errors import InputError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
# The named special tokens of transformers, in the order it adds missing ones.
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Copied by `save` when present; everything HFTokenizer reads.
FOLDER_FILES = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, GENERATION_CONFIG_FILE, CHAT_TEMPLATE_FILE)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def read_json(path: Path, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise InputError(
                f"{path} not found: a Hugging Face tokenizer folder (what transformers' save_pretrained "
                f"writes) holds {TOKENIZER_FILE}; point tokenizer.path at such a folder"
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({one_line(err)}); fix the file or point tokenizer.path "
                         f"at another folder") from err


def tokenizer_folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise InputError(
            f"{folder} does not exist: tokenizer.path must be a local folder holding {TOKENIZER_FILE} "
            f"(and usually {CONFIG_FILE}), e.g. one written by transformers' save_pretrained"
        )
    if not folder.is_dir():
        raise InputError(
            f"{folder} is a file: tokenizer.path must be the folder that holds {TOKENIZER_FILE}, not a file in it"
        )
    return folder


def content(value: Any) -> str | None:
    """The text of a token given as a string or as a serialized AddedToken ({"content": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def token_props(value: Any) -> dict:
    """AddedToken keyword arguments of a serialized token (flags other than the content)."""
    if not isinstance(value, Mapping):
        return {}
    keys = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return {k: bool(value[k]) for k in keys if k in value}


def read_config(folder: Path) -> dict:
    """tokenizer_config.json, with special_tokens_map.json laid over it when the config has no
    `added_tokens_decoder` (older folders), as transformers merges them."""
    config = read_json(folder / CONFIG_FILE, required=False)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InputError(f"{folder / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}")
    config = dict(config)
    if "added_tokens_decoder" not in config:
        legacy = read_json(folder / SPECIAL_TOKENS_MAP_FILE, required=False)
        if isinstance(legacy, dict):
            for key, value in legacy.items():
                if key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                    old = config.get(key) if isinstance(config.get(key), list) else []
                    config[key] = old + [v for v in value if content(v) not in {content(o) for o in old}]
                else:
                    config[key] = value
    return config


def config_special_tokens(config: Mapping) -> dict[str, Any]:
    """{name: token} of the named and model-specific special tokens a config declares (the
    variables a chat template sees: bos_token, eos_token, ..., image_token); tokens as given
    (a string or a serialized AddedToken)."""
    out: dict[str, Any] = {}
    for name in NAMED_TOKENS:
        if content(config.get(name)) is not None:
            out[name] = config[name]
    for name, value in config.items():
        if name not in NAMED_TOKENS and name.endswith("_token") and content(value) is not None:
            out[name] = value
    extra = config.get("extra_special_tokens")
    if isinstance(extra, Mapping):
        out.update({str(k): v for k, v in extra.items() if content(v) is not None})
    return out


def extra_special_tokens(config: Mapping) -> list[Any]:
    extra = config.get("extra_special_tokens")
    if not isinstance(extra, list):
        extra = config.get("additional_special_tokens")
    return [v for v in extra if content(v) is not None] if isinstance(extra, list) else []


def tokens_to_add(config: Mapping, added: set[str]) -> list[tuple[str, dict]]:
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
            text = content(value)
            if text is not None and text not in seen:
                out.append((text, token_props(value)))
                seen.add(text)
    for value in [*config_special_tokens(config).values(), *extra_special_tokens(config)]:
        text = content(value)
        if text is not None and text not in seen:
            out.append((text, {**token_props(value), "special": True}))
            seen.add(text)
    return out


def read_model_tokens(tokenizer_json: Mapping, source: Path) -> tuple[dict[str, int] | set[str], int]:
    """(the model's token strings, the model's highest id + 1) from tokenizer.json's `model`."""
    model = tokenizer_json.get("model")
    vocab = model.get("vocab") if isinstance(model, Mapping) else None
    if isinstance(vocab, Mapping):  # BPE, WordPiece, WordLevel: {token: id}
        ids = [i for i in vocab.values() if isinstance(i, int)]
        return set(vocab), (max(ids) + 1 if ids else 0)
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        return {str(entry[0]) for entry in vocab if isinstance(entry, list) and entry}, len(vocab)
    raise InputError(f"{source}: 'model.vocab' is missing or neither a mapping nor a list; is this a tokenizers file?")


def folder_vocab_size(path: str | os.PathLike) -> int:
    """The size an embedding must have to cover every id the folder's tokenizer can produce
    (highest id + 1, added tokens and the special tokens transformers adds included), read
    from the JSON files without importing `tokenizers`. Raises InputError (a ValueError) naming
    the path."""
    folder = tokenizer_folder(path)
    source = folder / TOKENIZER_FILE
    data = read_json(source, required=True)
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
    model_tokens, size = read_model_tokens(data, source)
    added = [t for t in data.get("added_tokens") or [] if isinstance(t, Mapping)]
    for token in added:
        if isinstance(token.get("id"), int):
            size = max(size, token["id"] + 1)
    contents = {t.get("content") for t in added}
    # Tokens transformers adds that are in neither vocabulary take the next free ids.
    size += sum(1 for text, _ in tokens_to_add(read_config(folder), contents) if text not in model_tokens)
    return size


def chat_templates(folder: Path, config: Mapping) -> str | dict[str, str] | None:
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


def generation_eos_ids(folder: Path) -> list[int]:
    """generation_config.json's eos_token_id (an int or a list), when the folder has one."""
    config = read_json(folder / GENERATION_CONFIG_FILE, required=False)
    value = config.get("eos_token_id") if isinstance(config, dict) else None
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
