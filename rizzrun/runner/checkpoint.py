"""Checkpoints as folders: `model.safetensors` (the policy model's own parameter names) +
`state.pt` (optimizer, scheduler, loop counters, RNG, data position) + `meta.json`.

Written atomically: everything goes to a hidden temp folder that is renamed into place, then
`checkpoints/latest` (a one-line text file) is replaced; a crash at any point leaves the
previous checkpoint and `latest` intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors.torch import load_file, save_file

from rizzrun.files import write_atomic

MODEL_PREFIX = "model."
WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"
LATEST = "latest"


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Save tensors as safetensors; tied tensors (shared storage) are stored once and named
    as aliases in the file's metadata, since safetensors refuses shared memory."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.device.type != "meta" and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Inverse of `save_weights`: aliases point at the same tensor again."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    tensors = load_file(str(path))
    for alias, name in aliases.items():
        tensors[alias] = tensors[name]
    return tensors


class FolderCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO writing a checkpoint as a folder (see module docstring).

    Lightning hands over one dict; its `state_dict` entries under `model.` (the policy) go to
    safetensors with the prefix removed, so `Llama.load_state_dict(load_weights(...))` works
    without Lightning. Everything else is pickled in `state.pt`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = dict(checkpoint)
        full = state.pop("state_dict")
        weights = {k[len(MODEL_PREFIX):]: v for k, v in full.items() if k.startswith(MODEL_PREFIX)}
        state["extra_state_dict"] = {k: v for k, v in full.items() if not k.startswith(MODEL_PREFIX)}
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
        try:
            save_weights(weights, tmp / WEIGHTS)
            torch.save(state, tmp / STATE)
            meta = {"step": checkpoint.get("global_step"), **checkpoint.get("rizzrun", {})}
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            if path.exists():  # the same step written again (e.g. final after periodic)
                trash = path.with_name(f".old-{path.name}")
                os.replace(path, trash)
                os.replace(tmp, path)
                shutil.rmtree(trash)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_atomic(path.parent / LATEST, path.name + "\n")

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        path = Path(path)
        state = torch.load(path / STATE, map_location=map_location or "cpu", weights_only=False)
        weights = load_weights(path / WEIGHTS)
        full = {MODEL_PREFIX + k: v for k, v in weights.items()}
        full.update(state.pop("extra_state_dict", {}))
        state["state_dict"] = full
        return state

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Keep the newest `keep` step folders by step number, and always the one `latest` names."""
    from rizzrun.layout import step_of

    directory = Path(directory)
    pointer = directory / LATEST
    named = pointer.read_text().strip() if pointer.is_file() else None
    folders = sorted((p for p in directory.glob("step-*") if p.is_dir() and step_of(p) is not None), key=step_of)
    for old in folders[: max(0, len(folders) - keep)]:
        if old.name != named:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder `checkpoints/latest` points at, or None when the run has no checkpoint."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{pointer} names {folder.name}, but {folder / WEIGHTS} is missing")
    return folder


def read_meta(checkpoint_dir: Path) -> dict:
    return json.loads((Path(checkpoint_dir) / META).read_text())
