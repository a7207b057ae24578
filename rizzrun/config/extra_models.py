"""The validator's rules for an objective's extra models (torch-free): `objective.models.NAME`
and `objective.precompute`, which the runner reads (rizzrun.runner.extra_models)."""

from __future__ import annotations

from pathlib import Path

from rizzrun import layout
from rizzrun.config.errors import listing, message, show, suggest
from rizzrun.config.specs import MISSING, readable


def check_extra_models(values: dict, targets: dict) -> list[str]:
    """`objective.models.NAME=SOURCE` and `objective.precompute=[NAME]` (read by the runner): each
    NAME one the objective declares (`extra_models`), each SOURCE `init`, a run folder or a
    Hugging Face folder, and what is precomputed a model that is set, over data that has pairs."""
    node, target = values.get("objective"), targets.get("objective")
    if not isinstance(node, dict) or target is None:
        return []
    declared = tuple(target.attrs.get("extra_models") or ())
    models = node.get("models") or {}
    out = []
    if not isinstance(models, dict):
        return out  # its type is reported with the node's keys
    for name, source in models.items():
        key = f"objective.models.{name}"
        if name not in declared:
            out.append(message(f"{key}={show(source)}", f"{target.target} takes no extra model '{name}'",
                               suggest(str(name), declared, "objective.models."),
                               f"it takes: {listing(declared) if declared else 'none'}"))
        elif source is MISSING:
            out.append(message(f"{key}=???", "required value is not set",
                               f"set it, e.g. {key}=RUN_FOLDER (a run folder or a Hugging Face Llama folder)"))
        elif source is not None and source != "init" and readable(source):
            folder = Path(str(source)).expanduser()
            if not ((folder / layout.CONFIG).is_file() or (folder / "config.json").is_file()):
                why = "no such folder" if not folder.exists() else "neither a run folder (config.yaml) nor a " \
                                                                   "Hugging Face folder (config.json)"
                out.append(message(f"{key}={show(source)}", why,
                                   "allowed: init, a run folder, a Hugging Face Llama folder, or null"))
    precompute = node.get("precompute") or []
    if isinstance(precompute, list):
        for name in precompute:
            if models.get(name) is None:
                out.append(message(f"objective.precompute=[{name}]", f"objective.models.{name} is not set",
                                   f"set objective.models.{name} (e.g. init) or drop {name} from objective.precompute"))
        data = targets.get("data")
        if precompute and data is not None and data.attrs.get("batch_kind") != "preference":
            out.append(message(f"objective.precompute={show(precompute)}",
                               f"data {data.target} makes '{data.attrs.get('batch_kind')}' batches, no pairs to "
                               "precompute over", "use a preference data option, or objective.precompute=[]"))
    return out
