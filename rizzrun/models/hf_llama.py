"""Hugging Face Llama checkpoints in and out of rizzrun's `Llama`.

A Hugging Face Llama folder is what `transformers.LlamaForCausalLM.save_pretrained` writes:

    config.json                      the shape (LlamaConfig fields)
    model.safetensors                the weights under transformers names, or
    model.safetensors.index.json     {"weight_map": {tensor name: shard file}} + the shards
    generation_config.json           (optional) bos/eos ids for generation

Reading: `hf_llama_dims(path)` turns config.json into the keyword arguments of `Llama`
(`vocab_size`, `d_model`, ..., `rope_scaling`), refusing what rizzrun's Llama cannot compute
exactly (another `model_type`, biases, an activation other than SiLU, RoPE types other than
plain and Llama 3's); `load_hf_weights(model, path)` checks every tensor's name and shape from
the safetensors headers before reading any data, then loads them through `from_hf_state_dict`
(the name table `HF_PARAM_NAMES`). `load_llama(path)` does both: it is what
`model.from_pretrained=PATH` runs (`rizzrun.runner.build`).

Writing: `hf_config_dict(model.config, ...)` is the config.json of a rizzrun model and
`save_hf_llama(model, out_dir, ...)` writes a folder `transformers.AutoModelForCausalLM` loads.

Interop depends on the model, never the reverse: `rizzrun.models.llama` imports nothing from here.

Both config.json dialects are read: transformers < 5 (`rope_theta` and `rope_scaling` at the top
level, `torch_dtype`) and >= 5 (`rope_parameters` holding `rope_theta` and the scaling keys,
`dtype`); the older one is written, which every version reads.

Everything at module level is torch-free (the config validator uses it before torch is
imported); the functions that touch tensors import torch and safetensors themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rizzrun.models.rope_scaling import (
    LLAMA3_ROPE_KEYS,
    SUPPORTED_ROPE_TYPES,
    is_int,
    is_number,
    normalize_rope_scaling,
    rope_scaling_problems,
    show,
)

if TYPE_CHECKING:
    from rizzrun.models.llama import Llama

HF_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# rizzrun `Llama` argument -> the config.json field it comes from.
HF_FIELDS: dict[str, str] = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_kv_head": "num_key_value_heads",
    "d_ff": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
    "rope_scaling": "rope_scaling",
}
# config.json fields with no default: transformers would silently take Llama-2-7B's values.
_REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# transformers.LlamaConfig's defaults for the optional fields.
_HF_DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
# Saved by old transformers versions; recomputed from the config, never loaded.
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)
_MAX_LISTED = 12


class HFCheckpointError(ValueError):
    """A Hugging Face folder rizzrun cannot load: `where` (a path) and one line per problem."""

    def __init__(self, where: str | os.PathLike, problems: str | list[str]):
        self.where = str(where)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:_MAX_LISTED]
        more = len(self.problems) - len(shown)
        if len(self.problems) == 1:
            text = f"{self.where}: {self.problems[0]}"
        else:
            text = f"{self.where}: {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in shown)
            if more:
                text += f"\n  - ... and {more} more"
        super().__init__(text)


# --- config.json -> Llama arguments -------------------------------------------------------------

def hf_folder(path: str | os.PathLike) -> Path:
    """`path` as a folder (~ expanded); HFCheckpointError when it is missing or not a folder."""
    folder = Path(os.fspath(path)).expanduser()
    if not folder.exists():
        raise HFCheckpointError(folder, "no such folder; give a local Hugging Face Llama folder "
                                        f"({HF_CONFIG} + {SAFETENSORS} or {SAFETENSORS_INDEX} + shards)")
    if not folder.is_dir():
        raise HFCheckpointError(folder, "is a file, not a folder; give the folder that holds "
                                        f"{HF_CONFIG} and the weights")
    return folder


def read_hf_config(path: str | os.PathLike) -> dict:
    """The parsed config.json of the Hugging Face folder `path`."""
    folder = hf_folder(path)
    config_path = folder / HF_CONFIG
    if not config_path.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "nothing"
        raise HFCheckpointError(folder, f"has no {HF_CONFIG} (it holds: {present}); a Hugging Face "
                                        f"model folder has {HF_CONFIG} beside the weights")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise HFCheckpointError(config_path, f"not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise HFCheckpointError(config_path, f"expected a JSON object, got {type(config).__name__}")
    return config


def llama_kwargs_from_hf_config(config: dict, where: str | os.PathLike = HF_CONFIG) -> dict:
    """`Llama` keyword arguments (every key of `HF_FIELDS`) from a transformers LlamaConfig dict.

    Raises HFCheckpointError(where, problems) listing every field rizzrun's Llama cannot honour,
    each with its value and what is supported.
    """
    from rizzrun.models.llama_sizes import llama_dim_errors

    problems: list[str] = []
    model_type = config.get("model_type")
    if model_type != "llama":
        problems.append(f"model_type={show(model_type)} is not supported; supported: \"llama\" "
                        "(transformers LlamaForCausalLM checkpoints)")
    architectures = config.get("architectures")
    if architectures and "LlamaForCausalLM" not in architectures:
        problems.append(f"architectures={show(architectures)} is not supported; supported: "
                        "[\"LlamaForCausalLM\"]")
    for field in ("attention_bias", "mlp_bias"):
        value = config.get(field, False)
        if value is not False:
            problems.append(f"{field}={show(value)} is not supported; supported: false "
                            "(rizzrun's Llama has no biases)")
    act = config.get("hidden_act", _HF_DEFAULTS["hidden_act"])
    if act != "silu":
        problems.append(f"hidden_act={show(act)} is not supported; supported: \"silu\" (SwiGLU)")

    dims: dict[str, Any] = {}
    for field in _REQUIRED_FIELDS:
        if config.get(field) is None:
            problems.append(f"{field} is missing; a Llama config.json gives {', '.join(_REQUIRED_FIELDS)}")
        elif not (is_int(config[field]) and config[field] > 0):
            problems.append(f"{field}={show(config[field])} must be a positive integer")
    for ours, field in HF_FIELDS.items():
        if field in config and ours not in ("rope_theta", "rope_scaling"):
            dims[ours] = config[field]
    for ours, field in (("max_seq_len", "max_position_embeddings"), ("norm_eps", "rms_norm_eps"),
                        ("tie_embeddings", "tie_word_embeddings")):
        if dims.get(ours) is None:
            dims[ours] = _HF_DEFAULTS[field]
    if dims.get("n_kv_head") is None:  # transformers: no num_key_value_heads means multi-head attention
        dims["n_kv_head"] = dims.get("n_head")

    head_dim, hidden, heads = config.get("head_dim"), config.get("hidden_size"), config.get("num_attention_heads")
    if head_dim is not None and is_int(hidden) and is_int(heads) and heads > 0:
        if hidden % heads or head_dim != hidden // heads:
            problems.append(f"head_dim={show(head_dim)} is not supported with hidden_size={hidden} and "
                            f"num_attention_heads={heads}; supported: head_dim = hidden_size / "
                            f"num_attention_heads = {hidden / heads:g} (rizzrun's Llama derives it)")

    # RoPE: transformers >= 5 nests rope_theta and the scaling in rope_parameters; older versions
    # write rope_theta and rope_scaling at the top level. Either (or a mix) is read.
    rope_field = "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"
    rope: dict = {}
    for field in ("rope_scaling", "rope_parameters"):
        value = config.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or any(isinstance(v, dict) for v in value.values()):
            problems.append(f"{field}={show(value)} is not supported; supported: null or one mapping "
                            f"{{rope_type, rope_theta, {', '.join(LLAMA3_ROPE_KEYS)}}} for every layer")
            value = {}
        rope.update(value)
    theta = rope.pop("rope_theta", config.get("rope_theta", _HF_DEFAULTS["rope_theta"]))
    if theta is None:
        theta = _HF_DEFAULTS["rope_theta"]
    dims["rope_theta"] = float(theta) if is_number(theta) else theta
    partial = rope.pop("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        problems.append(f"partial_rotary_factor={show(partial)} is not supported; supported: 1.0 "
                        "(RoPE on every channel of a head)")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        scaling = {"rope_type": "llama3", **{k: rope.get(k) for k in LLAMA3_ROPE_KEYS}}
        if scaling["original_max_position_embeddings"] is None:  # transformers' fallback
            scaling["original_max_position_embeddings"] = config.get(
                "original_max_position_embeddings", dims["max_seq_len"])
        found = rope_scaling_problems(scaling, rope_field)
        problems += found
        if not found:
            scaling = normalize_rope_scaling(scaling)
    elif rope_type != "default":
        problems.append(f"{rope_field}.rope_type={show(rope_type)} is not supported; supported: "
                        f"{', '.join(show(t) for t in SUPPORTED_ROPE_TYPES)} (Llama 3.1 scaling, "
                        "arXiv 2407.21783)")
    dims["rope_scaling"] = scaling

    if not problems:
        for text in llama_dim_errors({k: v for k, v in dims.items() if k not in ("vocab_size", "rope_scaling")}):
            problems.append(f"rizzrun's Llama cannot take this shape: {_hf_names_in(text)}")
    if problems:
        raise HFCheckpointError(where, problems)
    return {k: dims[k] for k in HF_FIELDS}


def _hf_names_in(text: str) -> str:
    """A `llama_dim_errors` line with config.json's field names beside rizzrun's."""
    for ours, field in HF_FIELDS.items():
        if ours != field:
            text = text.replace(f"{ours}=", f"{field} ({ours})=")
    return text


def hf_llama_dims(path: str | os.PathLike) -> dict:
    """`Llama` keyword arguments from the folder's config.json, after checking that the folder
    holds safetensors weights (see `weight_files`). Torch-free; what the validator calls."""
    folder = hf_folder(path)
    dims = llama_kwargs_from_hf_config(read_hf_config(folder), folder / HF_CONFIG)
    weight_files(folder)
    return dims


def dim_conflicts(hf_dims: dict, given: dict, config_path: str | os.PathLike = HF_CONFIG) -> list[tuple[str, str]]:
    """(key, problem) for every given (not None) `Llama` argument that contradicts config.json.

    A given value equal to config.json's is fine. `max_seq_len` may be smaller than
    max_position_embeddings (a shorter context needs smaller RoPE tables and KV caches, and
    changes no weight), not larger.
    """
    out = []
    for key, value in given.items():
        if value is None or key not in HF_FIELDS:
            continue
        field, theirs = HF_FIELDS[key], hf_dims[key]
        if key == "rope_scaling":
            try:
                if normalize_rope_scaling(value) == theirs:
                    continue
            except ValueError:
                pass
        elif key == "max_seq_len" and is_int(value) and 0 < value <= theirs:
            continue
        elif key == "tie_embeddings" and value is theirs:
            continue
        elif key != "tie_embeddings" and is_number(value) and not isinstance(value, bool) and value == theirs:
            continue
        allowed = (f"an integer <= {theirs}" if key == "max_seq_len" else show(theirs))
        out.append((key, f"conflicts with {field}={show(theirs)} in {config_path}; allowed: null "
                         f"(take config.json's) or {allowed}"))
    return out


def pretrained_llama_dims(path: str | os.PathLike, **given) -> dict:
    """config.json's `Llama` arguments with the given (not None) ones checked against them.

    Returns every key of `HF_FIELDS`; `max_seq_len` is the given one when it is smaller. Raises
    HFCheckpointError naming each conflicting key, config.json's value and the given value.
    """
    folder = hf_folder(path)
    dims = hf_llama_dims(folder)
    conflicts = dim_conflicts(dims, given, folder / HF_CONFIG)
    if conflicts:
        raise HFCheckpointError(folder, [f"{key}={show(given[key])} {problem}" for key, problem in conflicts])
    if given.get("max_seq_len") is not None:
        dims["max_seq_len"] = given["max_seq_len"]
    return dims


# --- parameter names ------------------------------------------------------------------------------

# rizzrun `Llama` parameter name -> transformers `LlamaForCausalLM` parameter name; {i}: layer index.
HF_PARAM_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "blocks.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.out.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def hf_names(n_layer: int) -> dict[str, str]:
    """rizzrun name -> transformers name for every parameter of an `n_layer`-block Llama."""
    return {ours.format(i=i): theirs.format(i=i)
            for ours, theirs in HF_PARAM_NAMES.items()
            for i in (range(n_layer) if "{i}" in ours else [None])}


def to_hf_state_dict(model: Llama) -> dict:
    """`model`'s weights under `transformers.LlamaForCausalLM` names (tensors shared with the model;
    a tied model lists the shared matrix under both names, as `LlamaForCausalLM.state_dict` does)."""
    names = hf_names(model.config.n_layer)
    # Weights only: a persistent buffer is a run-time statistic (e.g. FP8 amax histories), not a weight.
    weights = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    sd = {k: t for k, t in model.state_dict().items() if k in weights}
    unmapped = sorted(set(sd) - set(names))
    if unmapped:
        raise ValueError(f"parameters with no transformers Llama equivalent: {', '.join(unmapped)}")
    return {names[k]: t for k, t in sd.items()}


def from_hf_state_dict(model: Llama, sd: dict) -> Llama:
    """Load weights named as `transformers.LlamaForCausalLM`'s into `model`; returns it.

    A tied model takes its output matrix from `model.embed_tokens.weight` (tied checkpoints often
    omit `lm_head.weight`). A model on the meta device takes the given tensors as its parameters
    (no copy); otherwise they are copied into its own.
    """
    names = hf_names(model.config.n_layer)
    to_ours = {theirs: ours for ours, theirs in names.items()}
    # Old transformers versions saved the RoPE frequencies; the model recomputes them.
    unknown = sorted(k for k in sd if k not in to_ours and not k.endswith(_IGNORED_TENSOR_SUFFIXES))
    ours = {to_ours[k]: t for k, t in sd.items() if k in to_ours}
    if model.config.tie_embeddings and "embed.weight" in ours:
        ours["lm_head.weight"] = ours["embed.weight"]
    missing = sorted(names[k] for k in names.keys() - ours.keys())
    if unknown or missing:
        raise ValueError(f"not a transformers Llama state dict for this config: "
                         f"unknown keys {unknown}, missing keys {missing}")
    own = model.state_dict()
    wrong = [f"{names[k]} is {tuple(t.shape)} in the state dict, {tuple(own[k].shape)} in the model"
             for k, t in ours.items() if tuple(t.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"not a transformers Llama state dict for this config: shape mismatch: "
                         f"{'; '.join(wrong)}")
    meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(ours, strict=True, assign=meta)
    if meta and model.config.tie_embeddings:  # assign made two parameters of the shared matrix
        model.lm_head.weight = model.embed.weight
    return model


# --- weights ----------------------------------------------------------------------------------

def weight_files(path: str | os.PathLike) -> dict[Path, list[str] | None]:
    """The safetensors files of the folder: {file: tensor names the index puts there}, or
    {model.safetensors: None} for an unsharded folder (its header says what it holds).

    Like transformers, a single `model.safetensors` wins over an index. Torch-free.
    """
    folder = hf_folder(path)
    single, index = folder / SAFETENSORS, folder / SAFETENSORS_INDEX
    if single.is_file():
        return {single: None}
    if not index.is_file():
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf", ".h5"))
        found = f" (found {', '.join(other[:4])}: rizzrun reads safetensors only)" if other else ""
        raise HFCheckpointError(folder, f"has no {SAFETENSORS} and no {SAFETENSORS_INDEX}{found}; "
                                        "save the model with transformers' save_pretrained (safetensors)")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise HFCheckpointError(index, f"expected a JSON object with a \"weight_map\" mapping ({e!r})") from None
    files: dict[Path, list[str]] = {}
    for name, shard in weight_map.items():
        files.setdefault(folder / str(shard), []).append(name)
    missing = [f"weight_map names shard {f.name} (for {names[0]} and {len(names) - 1} more), which is missing"
               for f, names in files.items() if not f.is_file()]
    if missing:
        raise HFCheckpointError(index, missing)
    return files


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def tensor_problems(expected: dict[str, tuple], found: dict[str, tuple[tuple, str]],
                    optional: tuple[str, ...] = ()) -> list[str]:
    """Every missing, unexpected or mis-shaped tensor, one line each.

    expected: transformers name -> shape the config implies; found: name -> (shape, file it is in);
    `optional` names may be absent (the output matrix of a tied model).
    """
    out = []
    for name, shape in expected.items():
        if name not in found:
            if name not in optional:
                out.append(f"tensor {name} is missing (config.json implies shape {_shape(shape)})")
        elif tuple(found[name][0]) != tuple(shape):
            out.append(f"tensor {name} has shape {_shape(found[name][0])} in {found[name][1]}, but "
                       f"config.json implies {_shape(shape)}")
    for name, (shape, file) in found.items():
        if name not in expected and not name.endswith(_IGNORED_TENSOR_SUFFIXES):
            out.append(f"unexpected tensor {name} {_shape(shape)} in {file}: rizzrun's Llama has no such "
                       "parameter (no biases, no extra heads)")
    return out


def load_llama(path: str | os.PathLike, attention=None, mlp=None, **dims) -> Llama:
    """The rizzrun `Llama` of a local Hugging Face folder, with its weights (no random init first).

    config.json gives every dimension and the vocabulary; `dims` (`Llama` arguments, the keys of
    `HF_FIELDS`) may repeat them, None meaning "take config.json's", and `max_seq_len` may be
    smaller (a shorter context changes no weight); a conflict raises HFCheckpointError naming the
    key. `attention`, `mlp`: the token-mixer and feed-forward factories, as for `Llama` (one whose
    parameters are not those of transformers' Llama is refused by `load_hf_weights`, naming them). The weights are cast
    to the default dtype and placed on the default device; they never exist twice in memory, as
    the model is built on the meta device and takes the loaded tensors as its parameters (what no
    checkpoint holds, the RoPE tables and the mixers' buffers, is computed by `reset_buffers`).
    """
    import torch

    from rizzrun.models.llama import Llama

    unknown = sorted(set(dims) - set(HF_FIELDS))
    if unknown:
        raise TypeError(f"load_llama() got unknown dimension(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(HF_FIELDS)}")
    given = pretrained_llama_dims(path, **dims)
    device = torch.get_default_device()
    with torch.device("meta"):
        model = Llama(attention=attention, mlp=mlp, **given)
    model.reset_buffers(device)
    return load_hf_weights(model, path)


def load_hf_weights(model: Llama, path: str | os.PathLike) -> Llama:
    """Load the folder's weights into `model` (a rizzrun `Llama` whose shape matches config.json,
    possibly on the meta device, in which case the loaded tensors become its parameters).

    Every tensor name and shape is checked from the safetensors headers first; floating tensors
    are cast to the model's dtype (bf16/fp16 checkpoints load into an fp32 model) and moved to the
    device of its RoPE tables (where it was built). Returns model.
    """
    import torch
    from safetensors import safe_open

    folder = hf_folder(path)
    files = weight_files(folder)
    expected = {name: tuple(t.shape) for name, t in to_hf_state_dict(model).items()}
    optional = ("lm_head.weight",) if model.config.tie_embeddings else ()
    found: dict[str, tuple[tuple, str]] = {}
    problems = []
    for file, listed in files.items():
        with safe_open(str(file), framework="pt") as f:
            names = set(f.keys())
            for name in sorted(names):
                found[name] = (tuple(f.get_slice(name).get_shape()), file.name)
        for name in listed or ():
            if name not in names:
                problems.append(f"{SAFETENSORS_INDEX} puts tensor {name} in {file.name}, which does not hold it")
    problems += tensor_problems(expected, found, optional)
    if problems:
        raise HFCheckpointError(folder, problems)

    dtype = model.embed.weight.dtype  # on the meta device too: the default dtype at build time
    device = model.rope_cos.device  # where the model was built (the weights themselves may be meta)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if name in expected:
                    t = f.get_tensor(name)
                    state[name] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    return from_hf_state_dict(model, state)


# --- rizzrun -> Hugging Face ----------------------------------------------------------------------

def hf_config_dict(config, torch_dtype: str = "float32", bos_token_id: int | None = None,
                   eos_token_id: int | None = None, pad_token_id: int | None = None) -> dict:
    """config.json (transformers LlamaConfig fields) for a rizzrun `LlamaConfig`.

    Written in the transformers 4 layout (`rope_theta`, `rope_scaling`, `torch_dtype`), which
    transformers 5 reads as well.
    """
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.d_model // config.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None if config.rope_scaling is None else dict(config.rope_scaling),
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": config.init_std,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "torch_dtype": torch_dtype,
        "use_cache": True,
    }


def save_hf_llama(model, out_dir: str | os.PathLike, bos_token_id: int | None = None,
                  eos_token_id: int | None = None, pad_token_id: int | None = None) -> list[Path]:
    """Write `model` (a rizzrun `Llama`) as a Hugging Face folder: config.json,
    model.safetensors (transformers names; a tied model stores the shared matrix once, as
    transformers does) and generation_config.json. Returns the files written."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = to_hf_state_dict(model)
    if model.config.tie_embeddings:
        del state["lm_head.weight"]
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in state.items()}
    dtypes = {t.dtype for t in tensors.values()}
    dtype = str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else str(torch.get_default_dtype())
    save_file(tensors, str(out / SAFETENSORS), metadata={"format": "pt"})
    config = hf_config_dict(model.config, dtype, bos_token_id, eos_token_id, pad_token_id)
    (out / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {k: v for k, v in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id),
                                    ("pad_token_id", pad_token_id)) if v is not None}
    (out / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    return [out / HF_CONFIG, out / SAFETENSORS, out / GENERATION_CONFIG]
