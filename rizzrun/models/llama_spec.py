"""Config rules of `rizzrun.models.llama.Llama`, with no torch import (see rizzrun.config.specs).

A size preset with dimension overrides is checked by `llama_sizes.llama_dim_errors` (what the
constructor runs too); `from_pretrained=PATH` by reading the folder's config.json and weight
file names (`hf_llama`, torch-free at import), never loading a tensor.
"""

from __future__ import annotations

import re
from pathlib import Path

from rizzrun.config.errors import listing, message, show, suggest
from rizzrun.config.specs import Length, Vocab, readable
from rizzrun.models.llama_sizes import LLAMA_DIM_KEYS, LLAMA_SIZES, llama_dim_errors, resolve_llama_dims


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pretrained(node: dict) -> str | None:
    value = node.get("from_pretrained")
    return value if isinstance(value, str) else None


def _pretrained_unknown(node: dict) -> bool:
    """`from_pretrained` is set, but to nothing readable yet (`???`, reported as missing): the
    folder's dimensions are unknown, so the size preset must not stand in for them."""
    return node.get("from_pretrained") is not None and _pretrained(node) is None


def _run_model(node: dict) -> dict | None:
    """`from_pretrained` names a run folder: the model node of its config.yaml (what that run
    trained; rizzrun.runner.build.run_folder_model), else None."""
    path = _pretrained(node)
    if path is None or not (Path(path).expanduser() / "config.yaml").is_file():
        return None
    from omegaconf import OmegaConf

    try:
        run = OmegaConf.to_container(OmegaConf.load(Path(path).expanduser() / "config.yaml"), resolve=False)
    except Exception:  # noqa: BLE001 - the runner names an unreadable run folder
        return {}
    model = run.get("model") if isinstance(run, dict) else None
    return model if isinstance(model, dict) else {}


def _given_dims(node: dict) -> dict:
    return {k: node[k] for k in LLAMA_DIM_KEYS if k in node and readable(node[k])}


def check(node: dict, path: str) -> list[str]:
    if _pretrained(node) is not None:
        return _check_pretrained(node, path)
    if not readable(node.get("from_pretrained")):
        return []  # reported as not set; the dimensions come from that folder
    size = node.get("size", "tiny")
    if not readable(size):
        return []
    if not isinstance(size, str) or size not in LLAMA_SIZES:
        return [message(f"{path}.size={show(size)}", "not a Llama size", suggest(str(size), LLAMA_SIZES),
                        f"allowed: {listing(LLAMA_SIZES)}")]
    out = []
    rope_scaling = node.get("rope_scaling")
    if rope_scaling is not None and readable(rope_scaling):  # None: plain RoPE (no import needed)
        from rizzrun.models.hf_llama import rope_scaling_problems

        for text in rope_scaling_problems(rope_scaling, "rope_scaling"):
            match = re.match(r"([\w.]+)=(\S+) (.*)", text)
            out.append(f"{path}.{match.group(1)}={match.group(2)}: {match.group(3)}" if match else f"{path}.{text}")
    for text in llama_dim_errors({"size": size, **_given_dims(node)}):
        match = re.match(r"(\w+)=(\S+) (.*)", text)
        out.append(f"{path}.{match.group(1)}={match.group(2)}: {match.group(3)}" if match else f"{path}: {text}")
    return out


def _check_pretrained(node: dict, path: str) -> list[str]:
    """The folder, its config.json (supported, and agreeing with any dimension set beside it)
    and its weight files, read without torch; or a run folder, whose model's dimensions any
    dimension set beside it must equal."""
    from rizzrun.models.hf_llama import HF_CONFIG, HF_FIELDS, HFCheckpointError, dim_conflicts, hf_llama_dims

    run_model = _run_model(node)
    if run_model is not None:
        found = dims(run_model) or {}
        head = f"the model of the run in {node['from_pretrained']} has"
        return [message(f"{path}.{k}={show(v)}", f"{head} {k}={found[k]}", f"drop {path}.{k}, or set it to {found[k]}")
                for k, v in _given_dims(node).items() if k in found and v != found[k] and v is not None]

    folder = Path(node["from_pretrained"]).expanduser()
    head = f"{path}.from_pretrained={show(node['from_pretrained'])}"
    try:
        hf = hf_llama_dims(folder)
    except HFCheckpointError as e:
        where = "" if e.where == str(folder) else f"{e.where}: "
        return [message(head, f"{where}{p}") for p in e.problems]
    given = {k: node.get(k) for k in HF_FIELDS if readable(node.get(k))}
    return [message(f"{path}.{key}={show(given[key])}", problem)
            for key, problem in dim_conflicts(hf, given, folder / HF_CONFIG)]


def max_seq_len(node: dict) -> Length | None:
    """The context length: `max_seq_len` if set, else config.json's or the size preset's."""
    given = _int(node.get("max_seq_len"))
    path = _pretrained(node)
    if _pretrained_unknown(node):
        return Length(given, "model.max_seq_len") if given is not None else None
    if path is not None and _run_model(node) is not None:
        run_length = max_seq_len(_run_model(node))
        return Length(given, "model.max_seq_len") if given is not None else run_length
    if path is not None:
        from rizzrun.models.hf_llama import HF_CONFIG, HFCheckpointError, hf_llama_dims

        if given is not None:
            return Length(given, "model.max_seq_len")
        try:
            hf = hf_llama_dims(path)
        except HFCheckpointError:
            return None
        return Length(hf["max_seq_len"], f"max_position_embeddings in {Path(path).expanduser() / HF_CONFIG}")
    size = node.get("size", "tiny")
    if not isinstance(size, str) or size not in LLAMA_SIZES:
        return None
    if given is not None:
        return Length(given, "model.max_seq_len", "raise model.max_seq_len")
    return Length(LLAMA_SIZES[size]["max_seq_len"], f"model.size={size}", "raise model.max_seq_len")


def vocab_size(node: dict) -> Vocab | None:
    """With `from_pretrained`: config.json's vocab_size (None when the folder cannot be read;
    `check` says why). Otherwise the runner gives the tokenizer's: None."""
    path = _pretrained(node)
    if path is None or _run_model(node) is not None:  # a run folder's vocabulary: checked when loading
        return None
    from rizzrun.models.hf_llama import HFCheckpointError, hf_llama_dims

    try:
        value = hf_llama_dims(path)["vocab_size"]
    except HFCheckpointError:
        return None
    return Vocab(value, f"model.from_pretrained={show(path)}", f"vocab_size={value} in its config.json",
                 f"use the checkpoint's own tokenizer, or one with at most {value} ids")


def dims(node: dict) -> dict | None:
    """The dimensions the node builds with: the preset's with overrides, or config.json's (its
    max_seq_len lowered by `max_seq_len`); None when they are invalid (`check` says why)."""
    try:
        path = _pretrained(node)
        if _pretrained_unknown(node):
            return None
        if path is not None and _run_model(node) is not None:
            return dims(_run_model(node))
        if path is not None:
            from rizzrun.models.hf_llama import hf_llama_dims

            found = hf_llama_dims(path)
            return {**found, "max_seq_len": _int(node.get("max_seq_len")) or found["max_seq_len"]}
        return resolve_llama_dims(node.get("size", "tiny"), **{k: node.get(k) for k in LLAMA_DIM_KEYS if k in node})
    except Exception:  # noqa: BLE001 - invalid dims are `rizzrun validate`'s business
        return None
