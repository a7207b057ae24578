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
the safetensors headers before reading any data, then loads them through
`Llama.from_hf_state_dict` (the name table of `rizzrun.models.llama`). `Llama(from_pretrained=PATH)`
does both.

Writing: `hf_config_dict(model.config, ...)` is the config.json of a rizzrun model and
`save_hf_llama(model, out_dir, ...)` writes a folder `transformers.AutoModelForCausalLM` loads.

Both config.json dialects are read: transformers < 5 (`rope_theta` and `rope_scaling` at the top
level, `torch_dtype`) and >= 5 (`rope_parameters` holding `rope_theta` and the scaling keys,
`dtype`); the older one is written, which every version reads.

Everything at module level is torch-free (the config validator uses it before torch is
imported); the functions that touch tensors import torch and safetensors themselves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HF_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# The RoPE scaling of Llama 3.1 (arXiv 2407.21783): keys of `rope_scaling` besides `rope_type`.
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
SUPPORTED_ROPE_TYPES = ("default", "llama3")

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


def _show(value: Any) -> str:
    """A config value as JSON spells it (true, null, 8.0, "llama3")."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- RoPE scaling -----------------------------------------------------------------------------

def rope_scaling_problems(value: Any, key: str = "rope_scaling") -> list[str]:
    """Problems with a `rope_scaling` argument of `Llama` ([] when it is usable).

    Valid: None (plain RoPE), {"rope_type": "default"} (the same), or Llama 3's
    {"rope_type": "llama3", "factor": > 0, "low_freq_factor": > 0,
     "high_freq_factor": > low_freq_factor, "original_max_position_embeddings": int > 0}.
    """
    if value is None:
        return []
    if not isinstance(value, Mapping):  # a dict, or an OmegaConf DictConfig from the yaml
        return [f"{key}={_show(value)} must be null or a mapping "
                f"{{rope_type: llama3, {', '.join(LLAMA3_ROPE_KEYS)}}}"]
    rope_type = value.get("rope_type", value.get("type"))
    if rope_type == "default":
        extra = sorted(set(value) - {"rope_type", "type"})
        return [f"{key}.{k}={_show(value[k])}: rope_type 'default' takes no settings; "
                f"remove it or use rope_type 'llama3'" for k in extra]
    if rope_type != "llama3":
        return [f"{key}.rope_type={_show(rope_type)} is not supported; supported: "
                f"{', '.join(_show(t) for t in SUPPORTED_ROPE_TYPES)} "
                "('llama3': Llama 3.1 frequency scaling, arXiv 2407.21783)"]
    out = []
    unknown = sorted(set(value) - {"rope_type", "type", *LLAMA3_ROPE_KEYS})
    if unknown:
        out.append(f"{key} has unknown key(s) {', '.join(unknown)}; llama3 scaling takes: "
                   f"rope_type, {', '.join(LLAMA3_ROPE_KEYS)}")
    missing = [k for k in LLAMA3_ROPE_KEYS if value.get(k) is None]
    if missing:
        out.append(f"{key} (rope_type 'llama3') is missing {', '.join(missing)}; it needs "
                   f"{', '.join(LLAMA3_ROPE_KEYS)}")
    for k in ("factor", "low_freq_factor", "high_freq_factor"):
        v = value.get(k)
        if v is not None and not (_is_number(v) and v > 0):
            out.append(f"{key}.{k}={_show(v)} must be a positive number")
    low, high = value.get("low_freq_factor"), value.get("high_freq_factor")
    if _is_number(low) and _is_number(high) and 0 < low and 0 < high <= low:
        out.append(f"{key}.high_freq_factor={_show(high)} must be greater than "
                   f"low_freq_factor={_show(low)} (the two bound the smoothly scaled band)")
    orig = value.get("original_max_position_embeddings")
    if orig is not None and not (_is_int(orig) and orig > 0):
        out.append(f"{key}.original_max_position_embeddings={_show(orig)} must be a positive integer")
    return out


def normalize_rope_scaling(value: Any, key: str = "rope_scaling") -> dict | None:
    """`value` checked and in canonical form: None for plain RoPE, else
    {"rope_type": "llama3", "factor": float, "low_freq_factor": float, "high_freq_factor": float,
    "original_max_position_embeddings": int}. Raises ValueError naming the bad key and value."""
    problems = rope_scaling_problems(value, key)
    if problems:
        raise ValueError("; ".join(problems))
    if value is None or value.get("rope_type", value.get("type")) == "default":
        return None
    return {"rope_type": "llama3", **{k: float(value[k]) for k in LLAMA3_ROPE_KEYS[:3]},
            "original_max_position_embeddings": int(value["original_max_position_embeddings"])}


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
        problems.append(f"model_type={_show(model_type)} is not supported; supported: \"llama\" "
                        "(transformers LlamaForCausalLM checkpoints)")
    architectures = config.get("architectures")
    if architectures and "LlamaForCausalLM" not in architectures:
        problems.append(f"architectures={_show(architectures)} is not supported; supported: "
                        "[\"LlamaForCausalLM\"]")
    for field in ("attention_bias", "mlp_bias"):
        value = config.get(field, False)
        if value is not False:
            problems.append(f"{field}={_show(value)} is not supported; supported: false "
                            "(rizzrun's Llama has no biases)")
    act = config.get("hidden_act", _HF_DEFAULTS["hidden_act"])
    if act != "silu":
        problems.append(f"hidden_act={_show(act)} is not supported; supported: \"silu\" (SwiGLU)")

    dims: dict[str, Any] = {}
    for field in _REQUIRED_FIELDS:
        if config.get(field) is None:
            problems.append(f"{field} is missing; a Llama config.json gives {', '.join(_REQUIRED_FIELDS)}")
        elif not (_is_int(config[field]) and config[field] > 0):
            problems.append(f"{field}={_show(config[field])} must be a positive integer")
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
    if head_dim is not None and _is_int(hidden) and _is_int(heads) and heads > 0:
        if hidden % heads or head_dim != hidden // heads:
            problems.append(f"head_dim={_show(head_dim)} is not supported with hidden_size={hidden} and "
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
            problems.append(f"{field}={_show(value)} is not supported; supported: null or one mapping "
                            f"{{rope_type, rope_theta, {', '.join(LLAMA3_ROPE_KEYS)}}} for every layer")
            value = {}
        rope.update(value)
    theta = rope.pop("rope_theta", config.get("rope_theta", _HF_DEFAULTS["rope_theta"]))
    if theta is None:
        theta = _HF_DEFAULTS["rope_theta"]
    dims["rope_theta"] = float(theta) if _is_number(theta) else theta
    partial = rope.pop("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        problems.append(f"partial_rotary_factor={_show(partial)} is not supported; supported: 1.0 "
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
        problems.append(f"{rope_field}.rope_type={_show(rope_type)} is not supported; supported: "
                        f"{', '.join(_show(t) for t in SUPPORTED_ROPE_TYPES)} (Llama 3.1 scaling, "
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
        elif key == "max_seq_len" and _is_int(value) and 0 < value <= theirs:
            continue
        elif key == "tie_embeddings" and value is theirs:
            continue
        elif key != "tie_embeddings" and _is_number(value) and not isinstance(value, bool) and value == theirs:
            continue
        allowed = (f"an integer <= {theirs}" if key == "max_seq_len" else _show(theirs))
        out.append((key, f"conflicts with {field}={_show(theirs)} in {config_path}; allowed: null "
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
        raise HFCheckpointError(folder, [f"{key}={_show(given[key])} {problem}" for key, problem in conflicts])
    if given.get("max_seq_len") is not None:
        dims["max_seq_len"] = given["max_seq_len"]
    return dims


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


def load_hf_weights(model, path: str | os.PathLike):
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
    expected = {name: tuple(t.shape) for name, t in model.to_hf_state_dict().items()}
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
    return model.from_hf_state_dict(state)


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
    state = model.to_hf_state_dict()
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
