"""The objective as the runner builds it, with the models it needs besides the policy.

An objective class declares the extra models it takes (`extra_models = ("reference",)`); its
config node says where each comes from, under two keys the runner reads and never passes to the
objective (rizzrun.config.schema.RUNNER_READ):

    models:                  # NAME: SOURCE
      reference: init        # init: the policy's starting weights (after model.from_pretrained)
                             # PATH: a run folder (the model it trained, with its head if it
                             #       trained one) or a Hugging Face Llama folder
                             # null: none (e.g. DPO with reference_free=true)
    precompute: [reference]  # NAMEs whose outputs are computed once, before training

Each model is frozen (no gradients, eval mode: dropout off) and handed to every objective call as
a keyword (`obj(policy, batch, reference=model)`). With `precompute`, the objective's own
`NAME_outputs(model, batch)` runs once over every pair of the data (`data.example_batches()`),
the table is cached under `<cache>/precomputed/` (keyed by the data, the tokenizer, the model's
weights digest and the objective's settings) and the objective receives a
`rizzrun.objectives.extra.Precomputed` instead of the model, which is then released.

A checkpoint never holds an extra model: it records each one's source and the SHA-256 of its
weights (`records`), and a resume rebuilds the model and refuses one whose digest changed.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.errors import InputError

log = logging.getLogger("rizzrun")

MODELS_KEY = "models"
PRECOMPUTE_KEY = "precompute"
INIT = "init"


def objective_node(cfg: DictConfig) -> dict:
    """The objective's node without the keys the runner reads (models, precompute)."""
    node = OmegaConf.to_container(cfg.objective, resolve=True)
    node.pop(MODELS_KEY, None)
    node.pop(PRECOMPUTE_KEY, None)
    return node


def extra_sources(cfg: DictConfig) -> dict[str, str]:
    """{name: source} of the extra models the config asks for (null sources left out)."""
    models = cfg.objective.get(MODELS_KEY) or {}
    return {str(k): str(v) for k, v in OmegaConf.to_container(models, resolve=True).items() if v is not None} \
        if isinstance(models, DictConfig) else {}


def precomputed_names(cfg: DictConfig) -> list[str]:
    return [str(n) for n in (cfg.objective.get(PRECOMPUTE_KEY) or [])]


def build_objective(cfg: DictConfig, model: torch.nn.Module, tokenizer: Any = None):
    """The objective, given what the runner supplies to a target that takes it and leaves it null
    (rizzrun.config.schema.RUNNER_SUPPLIED): `d_model`, the policy's width (an objective with a
    head of its own), and `eos_id`, the tokenizer's."""
    from hydra.utils import get_object, instantiate

    node = objective_node(cfg)
    params = inspect.signature(get_object(node["_target_"])).parameters
    given = {"d_model": lambda: int(model.config.d_model),
             "eos_id": lambda: None if tokenizer is None else int(tokenizer.eos_id)}
    supplied = {k: make() for k, make in given.items() if k in params and node.get(k) is None}
    objective = instantiate(node, **{k: v for k, v in supplied.items() if v is not None})
    if tokenizer is not None and hasattr(objective, "use_tokenizer"):  # one that encodes text (SCoRe's instruction)
        objective.use_tokenizer(tokenizer)
    return objective


def load_source(cfg: DictConfig, source: str, policy: torch.nn.Module, tokenizer: Any, key: str) -> torch.nn.Module:
    """The model a SOURCE names (see the module docstring), before freezing. A run folder's
    tokenizer must encode as this run's does; `key` (objective.models.NAME) heads every error."""
    if source == INIT:
        return copy.deepcopy(policy)
    from rizzrun.runner.build import is_run_folder

    path = Path(source).expanduser()
    if is_run_folder(source):
        from rizzrun.runner.generate import check_same_tokenizer, load_run_model

        model, run_tokenizer = load_run_model(path)
        check_same_tokenizer(f"{key}={source}", run_tokenizer, tokenizer)
        return model
    if (path / "config.json").is_file():
        from rizzrun.models.hf_llama import load_llama
        from rizzrun.runner.build import factories_for

        return load_llama(path, **factories_for(cfg))
    raise InputError(f"{key}={source}: not a run folder (no {layout.CONFIG}) nor a Hugging Face folder "
                     f"(no config.json); allowed: {INIT}, a run folder, a Hugging Face Llama folder, or null")


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode (dropout off), as every reference/teacher forward must be."""
    model.requires_grad_(False)
    return model.eval()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state_dict (names in order, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def build_extra_models(cfg: DictConfig, objective, policy: torch.nn.Module, tokenizer: Any, data: Any,
                       resume_meta: dict | None = None) -> tuple[dict[str, Any], dict[str, dict]]:
    """(what each extra-model keyword receives, the records a checkpoint keeps) for `objective`.

    Call right after the policy is built (before training), so that `init` is its starting
    weights. `resume_meta`: the meta.json of the checkpoint a resume starts from; a model whose
    digest differs from the one recorded there is refused (InputError naming the source)."""
    declared = tuple(getattr(objective, "extra_models", ()))
    sources, precompute = extra_sources(cfg), precomputed_names(cfg)
    unknown = [n for n in [*sources, *precompute] if n not in declared]
    if unknown:
        raise InputError(f"objective.{MODELS_KEY}.{unknown[0]}: {type(objective).__name__} takes no extra model "
                         f"'{unknown[0]}'; it takes: {', '.join(declared) or 'none'}")
    given, records = {}, {}
    recorded = (resume_meta or {}).get("extra_models", {})
    for name, source in sources.items():
        key = f"objective.{MODELS_KEY}.{name}"
        model = freeze(load_source(cfg, source, policy, tokenizer, key))
        digest = weights_digest(model)
        before = recorded.get(name, {}).get("sha256")
        if resume_meta is not None and before is not None and before != digest:
            raise InputError(f"{key}={source}: its weights changed since this run started (sha256 {before[:12]}... "
                             f"recorded in the checkpoint, {digest[:12]}... now); resume with the same {name}, "
                             "or start a new run")
        records[name] = {"source": source, "sha256": digest}
        if name in precompute:
            table = precompute_outputs(cfg, objective, name, model, data, tokenizer, digest)
            records[name]["precomputed"] = table.digest
            given[name] = table
            del model
        else:
            given[name] = model
    return given, records


def precompute_outputs(cfg: DictConfig, objective, name: str, model: torch.nn.Module, data: Any, tokenizer: Any,
                       digest: str):
    """`objective.NAME_outputs(model, batch)` for every pair of `data` (one pass, no gradients),
    as a `Precomputed` table indexed by row; read from the cache when this exact table exists."""
    from safetensors.torch import load_file, save_file

    from rizzrun.objectives.extra import Precomputed
    from rizzrun.paths import cache_root

    if not hasattr(data, "example_batches"):
        raise InputError(f"objective.{PRECOMPUTE_KEY}=[{name}]: data {type(data).__name__} has no pairs to precompute "
                         "over (it makes no example_batches); drop objective.precompute")
    settings = json.dumps(objective_node(cfg), sort_keys=True, default=str)
    key = hashlib.sha256(f"precomputed-v1|{name}|{settings}|{data.fingerprint}|{tokenizer.fingerprint}|{digest}"
                         .encode()).hexdigest()[:40]
    path = cache_root(cfg.cache_dir) / "precomputed" / f"{name}-{key}.safetensors"
    if path.is_file():
        table = load_file(str(path))["outputs"]
        log.info("precomputed %s outputs: read %s (%d rows)", name, path, table.shape[0])
        return Precomputed(table, key)
    fn = getattr(objective, f"{name}_outputs")
    rows, outputs = [], []
    with torch.no_grad():
        for batch in data.example_batches():
            rows.append(batch["row"])
            outputs.append(fn(model, batch).float().cpu())
    index = torch.cat(rows)
    values = torch.cat(outputs)
    table = torch.full((int(index.max()) + 1, *values.shape[1:]), float("nan"))
    table[index] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ranks of one run may write it at once
    save_file({"outputs": table.contiguous()}, str(tmp))
    tmp.replace(path)
    log.info("precomputed %s outputs: %d rows -> %s", name, len(index), path)
    return Precomputed(table, key)
