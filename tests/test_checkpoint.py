"""Verified checkpoints: digests in meta.json, the resume fallback, the refusal of generate/eval/
export, pruning by step number, the clean-up after a crashed write, durable writes, and
`weights_only` loading that refuses a pickle which would run code."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rizzrun.errors import InputError
from rizzrun.runner.checkpoint import FolderCheckpointIO, load_state, load_weights
from rizzrun.runner.checkpoint_files import (
    checked_checkpoint,
    latest_valid_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    verify_checkpoint,
)

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hand_made(checkpoints: Path, name: str, weights: bytes = b"weights", state: bytes = b"state") -> Path:
    """A checkpoint folder with arbitrary file contents and a meta.json whose digests are
    computed here with hashlib (not with the code under test)."""
    folder = checkpoints / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "state.pt").write_bytes(state)
    files = {n: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
             for n, b in (("model.safetensors", weights), ("state.pt", state))}
    (folder / "meta.json").write_text(json.dumps({"step": 0, "format": 2, "files": files}))
    return folder


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_cache) -> Path:
    """A real 4-step run with checkpoints at steps 2 and 4 (tests copy it before damaging it)."""
    from test_runner import train

    run_dir, _ = train(tmp_path_factory.mktemp("real"), "run", "trainer.max_steps=4", "trainer.val_every=2",
                       "trainer.checkpoint_every=2", cache=shared_cache)
    return run_dir


@pytest.fixture
def run_copy(real_run, tmp_path) -> Path:
    return Path(shutil.copytree(real_run, tmp_path / "run"))


# --- what a checkpoint records ---------------------------------------------------------------------

def test_meta_records_the_size_and_sha256_of_each_file(real_run):
    for folder in (real_run / "checkpoints").glob("step-*"):
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["format"] == 2 and meta["step"] == int(folder.name.split("-")[1])
        for name in ("model.safetensors", "state.pt"):
            assert meta["files"][name] == {"bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)}
        assert verify_checkpoint(folder) == []


def test_state_loads_with_weights_only_and_equals_the_unrestricted_load(real_run):
    """The allow-list covers everything the runner saves (optimizer, scheduler, loops, RNG
    states), and nothing is lost by loading with weights_only=True."""
    path = real_run / "checkpoints" / "step-000004" / "state.pt"
    safe, full = load_state(path), torch.load(path, weights_only=False)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return a.dtype == b.dtype and np.array_equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return a == b

    assert same(safe, full)
    random.setstate(safe["rng"]["python"])
    np.random.set_state(safe["rng"]["numpy"])  # the restored states are usable as they are
    assert np.random.get_state()[1].tolist() == full["rng"]["numpy"][1].tolist()


class Touch:
    """A pickle that creates a file when unpickled: what a hostile state.pt could do."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_state_that_would_run_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "pwned"
    torch.save({"optimizer_states": [], "payload": Touch(target)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)  # control: an unrestricted load runs it
    assert target.exists()
    target.unlink()

    folder = hand_made(tmp_path / "checkpoints", "step-000002")
    torch.save({"optimizer_states": [], "payload": Touch(target)}, folder / "state.pt")
    meta = json.loads((folder / "meta.json").read_text())  # digests that match: only the content is hostile
    meta["files"]["state.pt"] = {"bytes": (folder / "state.pt").stat().st_size, "sha256": sha256(folder / "state.pt")}
    (folder / "meta.json").write_text(json.dumps(meta))
    assert verify_checkpoint(folder) == []
    with pytest.raises(InputError, match=r"state\.pt: holds .*open.*refusing to run code") as info:
        FolderCheckpointIO().load_checkpoint(folder)
    assert "\n" not in str(info.value)
    assert not target.exists()


# --- verification --------------------------------------------------------------------------------

def test_verify_names_each_damaged_file(tmp_path):
    ck = tmp_path / "checkpoints"
    assert verify_checkpoint(hand_made(ck, "step-000001")) == []

    truncated = hand_made(ck, "step-000002", weights=b"0123456789")
    (truncated / "model.safetensors").write_bytes(b"01234")
    assert verify_checkpoint(truncated) == [f"{truncated}/model.safetensors: truncated (5 bytes, meta.json records 10)"]

    grown = hand_made(ck, "step-000003", state=b"abc")
    (grown / "state.pt").write_bytes(b"abcd")
    assert verify_checkpoint(grown) == [f"{grown}/state.pt: size mismatch (4 bytes, meta.json records 3)"]

    flipped = hand_made(ck, "step-000004", weights=b"0123456789")
    flip_byte(flipped / "model.safetensors", 3)
    assert verify_checkpoint(flipped) == [
        f"{flipped}/model.safetensors: digest mismatch (corrupted: its SHA-256 differs from meta.json's)"]

    missing = hand_made(ck, "step-000005")
    (missing / "state.pt").unlink()
    assert verify_checkpoint(missing) == [f"{missing}/state.pt: missing"]

    bad_meta = hand_made(ck, "step-000006")
    (bad_meta / "meta.json").write_text('{"step": 6, "form')
    (problem,) = verify_checkpoint(bad_meta)
    assert problem.startswith(f"{bad_meta}/meta.json: unreadable (")

    no_meta = hand_made(ck, "step-000007")
    (no_meta / "meta.json").unlink()
    assert verify_checkpoint(no_meta) == [f"{no_meta}/meta.json: missing"]


def test_verification_sees_a_change_after_an_earlier_verification(tmp_path):
    """Results are remembered per file size/mtime/inode; a file replaced later is checked again."""
    folder = hand_made(tmp_path / "checkpoints", "step-000001", weights=b"0123456789")
    assert verify_checkpoint(folder) == []
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"0123456780")  # same size, new inode and mtime
    assert verify_checkpoint(folder) and "digest mismatch" in verify_checkpoint(folder)[0]


def test_checkpoints_from_before_digests_are_accepted_with_a_warning_and_still_checked(run_copy, caplog):
    """A meta.json without digests (written before this format): accepted with a warning, after
    the checks the files allow: the safetensors header accounts for the file size, the zip CRCs
    of state.pt hold."""
    folder = run_copy / "checkpoints" / "step-000004"
    (folder / "meta.json").write_text(json.dumps({"step": 4, "data_position": 4}))
    with caplog.at_level(logging.WARNING, logger="rizzrun"):
        assert verify_checkpoint(folder) == []
    assert "written before rizzrun recorded digests" in caplog.text

    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size - 10)
    assert verify_checkpoint(folder) == [f"{weights}: truncated ({size - 10} bytes, its header needs {size})"]

    older = run_copy / "checkpoints" / "step-000002"
    (older / "meta.json").write_text(json.dumps({"step": 2, "data_position": 2}))
    state = older / "state.pt"
    flip_byte(state, state.stat().st_size // 2)  # inside the optimizer tensors' bytes
    (problem,) = verify_checkpoint(older)
    assert problem.startswith(f"{state}: ")


# --- which checkpoint to load --------------------------------------------------------------------

def test_resume_falls_back_to_the_newest_intact_checkpoint_by_step_number(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    for name in ("step-99", "step-100", "step-999999", "step-1000000"):  # text order: 100 < 1000000 < 99 < 999999
        hand_made(ck, name)
    flip_byte(ck / "step-1000000" / "state.pt", 0)
    (ck / "latest").write_text("step-1000000\n")
    folder, problems = latest_valid_checkpoint(tmp_path / "run")
    assert folder == ck / "step-999999"
    assert problems == [f"{ck}/step-1000000/state.pt: digest mismatch (corrupted: its SHA-256 differs from meta.json's)"]

    # the newest by number is damaged too: the next one by number, with both problems named
    os.truncate(ck / "step-999999" / "model.safetensors", 2)
    folder, problems = latest_valid_checkpoint(tmp_path / "run")
    assert folder == ck / "step-100"
    assert [p.split(": ")[0] for p in problems] == [f"{ck}/step-1000000/state.pt", f"{ck}/step-999999/model.safetensors"]


def test_resume_takes_the_checkpoint_latest_names_when_it_is_intact(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    for name in ("step-000040", "step-000060"):
        hand_made(ck, name)
    (ck / "latest").write_text("step-000040\n")  # a crash between the rename of 60 and the pointer update
    assert latest_valid_checkpoint(tmp_path / "run") == (ck / "step-000040", [])
    (ck / "latest").write_text("../../elsewhere\n")
    assert latest_valid_checkpoint(tmp_path / "run") == (
        ck / "step-000060", [f"{ck}/latest: names '../../elsewhere', not a step-NNNNNN folder"])
    assert latest_valid_checkpoint(tmp_path / "fresh") == (None, [])


def test_generate_eval_export_refuse_a_damaged_checkpoint_and_name_the_way_out(tmp_path):
    run = tmp_path / "run"
    ck = run / "checkpoints"
    hand_made(ck, "step-000040")
    hand_made(ck, "step-000060")
    (ck / "latest").write_text("step-000060\n")
    assert checked_checkpoint(run) == ck / "step-000060"
    flip_byte(ck / "step-000060" / "model.safetensors", 1)
    with pytest.raises(InputError) as info:
        checked_checkpoint(run)
    assert str(info.value) == (
        f"{ck}/step-000060/model.safetensors: digest mismatch (corrupted: its SHA-256 differs from meta.json's); "
        f"refusing to load it; the newest intact checkpoint is step-000040 (rizzrun resume={run} falls back to it); "
        "pass --checkpoint step-000040 to use it here")
    assert checked_checkpoint(run, "step-000040") == checked_checkpoint(run, "40") == ck / "step-000040"
    with pytest.raises(InputError, match=r"^--checkpoint 50: no such checkpoint in .*; checkpoints: step-000060, step-000040$"):
        checked_checkpoint(run, "50")
    with pytest.raises(InputError, match="no such checkpoint"):
        checked_checkpoint(run, "../run/checkpoints/step-000040")


def test_the_rizzrun_commands_refuse_damaged_checkpoints_in_one_line(run_copy, tmp_path):
    ck = run_copy / "checkpoints"
    flip_byte(ck / "step-000004" / "model.safetensors", (ck / "step-000004" / "model.safetensors").stat().st_size - 5)
    os.truncate(ck / "step-000002" / "state.pt", 1000)
    for argv in (["generate", str(run_copy), "--prompt", "x"], ["eval", str(run_copy)],
                 ["export", str(run_copy), str(tmp_path / "hf")]):
        done = subprocess.run([RIZZRUN, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"error: {ck}/step-000004/model.safetensors: digest mismatch (corrupted: its SHA-256 "
                               f"differs from meta.json's); refusing to load it; no intact checkpoint is left in {ck}\n")
    done = subprocess.run([RIZZRUN, "generate", str(run_copy), "--prompt", "x", "--checkpoint", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"error: {ck}/step-000002/state.pt: truncated (1000 bytes, meta.json records "
                           f"{json.loads((ck / 'step-000002' / 'meta.json').read_text())['files']['state.pt']['bytes']}); "
                           f"refusing to load it; no intact checkpoint is left in {ck}\n")
    assert not (tmp_path / "hf").exists()


def test_a_healthy_older_checkpoint_is_loaded_by_name(run_copy):
    from rizzrun.runner.generate import load_run_checkpoint

    ck = run_copy / "checkpoints"
    flip_byte(ck / "step-000004" / "state.pt", 100)
    _, _, model, folder = load_run_checkpoint(run_copy, "step-000002")
    assert folder == ck / "step-000002"
    expected = load_weights(ck / "step-000002" / "model.safetensors")
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items() if k in expected)


# --- pruning and clean-up -------------------------------------------------------------------------

def test_prune_keeps_the_newest_intact_by_number_and_the_one_latest_names(tmp_path):
    ck = tmp_path / "checkpoints"
    for name in ("step-98", "step-99", "step-100", "step-999999", "step-1000000"):
        hand_made(ck, name)
    flip_byte(ck / "step-1000000" / "model.safetensors", 0)  # the newest is damaged
    (ck / "latest").write_text("step-99\n")  # and latest names an older one
    removed = prune_checkpoints(ck, keep=2)
    assert sorted(p.name for p in removed) == ["step-1000000", "step-98"]
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-100", "step-99", "step-999999"]

    # latest is never deleted, even when damaged and older than `keep` intact ones
    flip_byte(ck / "step-99" / "state.pt", 0)
    assert prune_checkpoints(ck, keep=1) == [ck / "step-100"]
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-99", "step-999999"]


def test_leftovers_of_a_crashed_write_are_removed_and_an_interrupted_rewrite_restored(tmp_path):
    ck = tmp_path / "checkpoints"
    hand_made(ck, "step-000004")
    hand_made(ck, "step-000006")
    (ck / "latest").write_text("step-000006\n")
    hand_made(ck, ".tmp-step-000010-k2j4x")  # the folder being written when the process died
    hand_made(ck, ".old-step-000006")  # a rewrite of 6 that finished: its old copy
    hand_made(ck, ".old-step-000008", weights=b"eight")  # a rewrite of 8 killed between its two renames
    (ck / ".latest.abc123.tmp").write_text("step-000010\n")
    (ck / "notes.txt").write_text("mine")
    done = remove_partial_writes(ck)
    assert len(done) == 4
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "notes.txt", "step-000004", "step-000006", "step-000008"]
    assert (ck / "step-000008" / "model.safetensors").read_bytes() == b"eight"
    assert (ck / "latest").read_text() == "step-000006\n"
    assert remove_partial_writes(ck) == [] and remove_partial_writes(tmp_path / "none") == []


def _lightning_like_checkpoint(step: int) -> dict:
    """What Lightning hands the CheckpointIO, in the runner's shape (tensors, optimizer, RNG)."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"global_step": step, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [opt.state_dict()], "rizzrun": {"data_position": step},
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}


def test_write_syncs_files_and_folders_before_latest_moves(tmp_path, monkeypatch):
    """Every file is fsynced, then the new folder, then (after the rename) checkpoints/; only then
    is `latest` replaced, and checkpoints/ synced again: a crash never leaves `latest` naming a
    folder whose contents are not on disk."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ck = tmp_path / "checkpoints"
    FolderCheckpointIO().save_checkpoint(_lightning_like_checkpoint(7), ck / "step-000007")
    monkeypatch.undo()

    rename = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(ck / "step-000007"))
    tmp = Path(events[rename][1])
    assert tmp.parent == ck and tmp.name.startswith(".tmp-step-000007-")
    synced_before = [e[1] for e in events[:rename] if e[0] == "fsync"]
    for name in ("model.safetensors", "state.pt", "meta.json"):
        assert any(Path(p).name == name or Path(p).name.startswith(f".{name}.") for p in synced_before), name
    assert synced_before[-1] == str(tmp)
    pointer = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(ck / "latest"))
    assert ("fsync", str(ck)) in events[rename:pointer]
    assert events[-1] == ("fsync", str(ck))
    assert (ck / "latest").read_text() == "step-000007\n"
    assert verify_checkpoint(ck / "step-000007") == []
    loaded = FolderCheckpointIO().load_checkpoint(ck / "step-000007")
    assert loaded["global_step"] == 7 and set(loaded["state_dict"]) == {"model.weight", "model.bias"}


def test_the_runner_start_cleans_up_then_resumes_from_the_newest_intact_checkpoint(run_copy, caplog):
    from rizzrun.runner.checkpoint import prepare_checkpoints

    ck = run_copy / "checkpoints"
    hand_made(ck, ".tmp-step-000006-x1y2")  # a write killed half-way
    (ck / ".latest.q9.tmp").write_text("step-000006\n")
    flip_byte(ck / "step-000004" / "state.pt", 200)
    with caplog.at_level(logging.WARNING, logger="rizzrun"):
        assert prepare_checkpoints(run_copy, "true") == ck / "step-000002"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-000002", "step-000004"]
    assert f"checkpoint skipped: {ck}/step-000004/state.pt: digest mismatch" in caplog.text
    assert f"removed {ck}/.tmp-step-000006-x1y2" in caplog.text and f"resuming from {ck / 'step-000002'}" in caplog.text
    assert prepare_checkpoints(run_copy, None) is None  # a fresh start only cleans up

    os.truncate(ck / "step-000002" / "model.safetensors", 100)
    with pytest.raises(InputError, match=rf"^resume=true: no intact checkpoint in {ck} \({ck}/step-000004/state.pt: "
                                         r"digest mismatch .*; 1 more\); start afresh"):
        prepare_checkpoints(run_copy, "true")
    shutil.rmtree(ck)
    with pytest.raises(InputError, match=r"checkpoints/latest does not exist"):
        prepare_checkpoints(run_copy, "true")
