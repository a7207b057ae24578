"""Pipelines (rizzrun.runner.pipeline): runs one after another in one folder, each reading the folders of
the stages before it (@NAME); every stage validated before the first runs; a finished stage is never run
again and an interrupted one is resumed, so a stopped pipeline continues where it stopped."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from rizzrun import layout
from rizzrun.config import ConfigError, compose, load
from rizzrun.errors import InputError
from rizzrun.runner.pipeline import PIPELINE, run_pipeline, stage_plan

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
         "tokenizer=byte", "logger=none", "trainer.num_threads=1", "trainer.samples_per_val=0"]
SFT = [*MODEL, "data=arithmetic_sft", "data.n_train=40", "data.n_val=8", "data.batch_size=8", "trainer.max_steps=2",
       "trainer.val_every=2", "trainer.checkpoint_every=2"]
GROW = [*MODEL, "job=sample", "data=arithmetic_prompts", "data.n_train=6", "data.n_val=4", "decoder=sample",
        "decoder.max_new_tokens=4", "sample.num_generations=3", "model.from_pretrained=@sft"]
IMPROVE = [*MODEL, "data=rollouts", "data.path=@grow", "data.drop_truncated=false", "data.seq_len=16", "data.batch_size=4", "trainer.max_steps=2",
           "trainer.val_every=2", "trainer.checkpoint_every=2", "model.from_pretrained=@sft", "decoder=greedy",
           "decoder.max_new_tokens=4", "eval.at_end=true", "eval.max_documents=3", "eval.continuation_len=4"]


def pipeline(cache, stages: list[tuple[str, list[str]]]):
    cfg = compose([f"cache_dir={cache}", "logger=none", "trainer.num_threads=1", "name=pipe"])
    with open_dict(cfg):
        cfg.stages = [{"name": n, "overrides": o} for n, o in stages]
    return cfg


def open_dict(cfg):
    from omegaconf import open_dict as od

    return od(cfg)


def test_stages_run_in_order_reading_earlier_folders_and_resume(tmp_path, shared_cache):
    cfg = pipeline(shared_cache, [("sft", SFT), ("grow", GROW), ("improve", IMPROVE)])
    root = tmp_path / "pipe"
    root.mkdir()
    summary = run_pipeline(cfg, root)
    assert summary["status"] == "completed" and [s["status"] for s in summary["stages"]] == ["completed"] * 3
    assert json.loads((root / PIPELINE).read_text())["stages"][2]["status"] == "completed"
    improve = OmegaConf.load(root / "improve" / layout.CONFIG)
    assert improve.data.path == str(root / "grow") and improve.model.from_pretrained == str(root / "sft")
    grown = (root / "grow" / "rollouts" / "train.jsonl").read_text().splitlines()
    assert len(grown) == 6 * 3
    judged = json.loads((root / "improve" / layout.EVAL).read_text())
    assert judged["task"]["n"] == 3  # the rollouts' source task judges the improved model
    # Run again: every stage is done, none runs; an interrupted last stage is resumed, not restarted
    stamp = (root / "sft" / layout.SUMMARY).stat().st_mtime_ns
    again = run_pipeline(cfg, root)
    assert [s["status"] for s in again["stages"]] == ["completed (earlier)"] * 3
    assert (root / "sft" / layout.SUMMARY).stat().st_mtime_ns == stamp
    status = json.loads((root / "improve" / layout.SUMMARY).read_text())
    (root / "improve" / layout.SUMMARY).write_text(json.dumps({**status, "status": "stopped by SIGTERM"}))
    resumed = run_pipeline(cfg, root)
    assert [s["status"] for s in resumed["stages"]] == ["completed (earlier)"] * 2 + ["completed"]
    assert json.loads((root / "improve" / layout.SUMMARY).read_text())["resumed"][0]["previous_segment_ended"] == \
        "stopped by SIGTERM"
    # A stage that ended before saving anything to resume from starts again, its files kept aside
    import shutil

    shutil.rmtree(root / "improve" / layout.CHECKPOINTS)
    (root / "improve" / layout.SUMMARY).write_text(json.dumps({"status": "bad input"}))
    again = run_pipeline(cfg, root)
    assert again["stages"][2]["status"] == "completed"
    assert again["stages"][2]["earlier_attempt"] == str(root / "improve" / layout.ATTEMPTS / "1")
    assert json.loads((root / "improve" / layout.ATTEMPTS / "1" / layout.SUMMARY).read_text()) == {"status": "bad input"}


def test_bad_stages_are_refused_before_any_stage_runs(tmp_path, shared_cache):
    root = tmp_path / "bad"
    root.mkdir()
    with pytest.raises(InputError, match=r"stages\[1\] \(grow\): model.from_pretrained=@later: @later is not an "
                                         r"earlier stage; earlier stages: sft"):
        stage_plan(pipeline(shared_cache, [("sft", SFT), ("grow", [*GROW[:-1], "model.from_pretrained=@later"])]), root)
    cfg = pipeline(shared_cache, [("sft", [*SFT, "optimizer.lr=-1"]), ("grow", [*GROW, "sample.num_generations=0"])])
    with pytest.raises(InputError) as e:
        run_pipeline(cfg, root)
    assert "stage sft: optimizer.lr=-1: out of range" in str(e.value)
    assert "stage grow: sample.num_generations=0: out of range" in str(e.value)
    assert not (root / "sft").exists()  # nothing ran
    assert json.loads((root / layout.SUMMARY).read_text())["status"] == "bad input"
    with pytest.raises(InputError, match=r"stages\[1\].name=sft: a stage of that name comes earlier"):
        stage_plan(pipeline(shared_cache, [("sft", SFT), ("sft", SFT)]), root)


def test_the_validator_checks_every_stage_of_a_recipe():
    assert load(["+recipe=rest_tiny"]).stages[1].name == "grow1"
    with pytest.raises(ConfigError, match="stage grow1: sample.num_generations=0: out of range"):
        load(["+recipe=rest_tiny", "stages.1.overrides=['+recipe=rest_grow_tiny','model.from_pretrained=@sft',"
              "'sample.num_generations=0']"])
