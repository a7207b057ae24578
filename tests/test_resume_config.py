"""`resume=PATH|true` continues a run as it was configured (rizzrun.config.resume): the run's
saved config is the base, the command line changes only what it names, and what the checkpoint
was trained with cannot change. Run folders are made as Hydra makes them (`make_run`), or by the
real launcher with a runner that only writes the resolved config, as the real one does first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from rizzrun import layout
from rizzrun.config.compose import compose
from rizzrun.config.errors import ConfigError
from rizzrun.config.resume import literal, merged_overrides, resumed_job, with_overrides

REPO = Path(__file__).resolve().parents[1]

# The launcher, with a runner that writes the resolved config as rizzrun.runner.train.run does
# (its config.yaml) and trains nothing.
CONFIG_WRITING_RUNNER = (
    "import sys, types; from omegaconf import OmegaConf; "
    "run = lambda cfg, run_dir: (run_dir / 'config.yaml').write_text(OmegaConf.to_yaml(cfg, resolve=True)); "
    "sys.modules['rizzrun.runner.train'] = types.SimpleNamespace(run=run); "
    "from rizzrun.cli import main; main()")

FROZEN_TEXT = ("a resumed run keeps what its checkpoint was trained with (model, attention, mlp, tokenizer, data, "
               "objective and optimizer class, seed), but this command changes")
FIX_TEXT = "start a new run, or resume without changing them"


def make_run(folder: Path, overrides: list[str], checkpoint: bool = True) -> Path:
    """A run folder as Hydra leaves it, .hydra/{config,hydra,overrides}.yaml, and (`checkpoint`) as
    the runner would: with checkpoints/latest."""
    cfg = compose(overrides, hydra_config=True)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), folder / layout.HYDRA_SETTINGS)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.save(cfg, folder / layout.HYDRA_CONFIG)
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / layout.HYDRA_OVERRIDES)
    if checkpoint:
        (folder / layout.CHECKPOINTS).mkdir()
        (folder / layout.LATEST).write_text("step-000060\n")
    return folder


def launch(out_root: Path, *argv: str, code: str = CONFIG_WRITING_RUNNER) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIZZRUN_OUTPUTS": str(out_root), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def resolved(folder: Path) -> dict:
    return yaml.safe_load((folder / layout.CONFIG).read_text())


def job_config(overrides: list[str]) -> dict:
    """What Hydra composes for the job's overrides, as written (unresolved)."""
    return OmegaConf.to_container(compose(overrides), resolve=False)


# --- the reproduction: a 60-step warmup-2 run ----------------------------------------------------

def test_resume_path_continues_the_run_as_configured(tmp_path):
    first = launch(tmp_path, "+recipe=tiny", "trainer.max_steps=60", "scheduler.warmup_steps=2")
    assert first.returncode == 0, first.stderr
    [run] = list(tmp_path.glob("*/*-tiny"))
    (run / layout.CHECKPOINTS).mkdir()
    (run / layout.LATEST).write_text("step-000060\n")
    began = resolved(run)
    assert (began["trainer"]["max_steps"], began["scheduler"]["warmup_steps"]) == (60, 2)

    again = launch(tmp_path, f"resume={run}")
    assert again.returncode == 0, again.stderr
    assert f"resuming {run} (nothing changed)\n" in again.stderr
    # before the fix: max_steps 400 and warmup 50, the defaults', and config.yaml rewritten with them
    assert resolved(run) == {**began, "resume": str(run)}

    longer = launch(tmp_path, f"resume={run}", "trainer.max_steps=100")
    assert longer.returncode == 0, longer.stderr
    assert (f"resuming {run} (changed: trainer.max_steps 60 -> 100; kept from the run: scheduler.total_steps 60)\n"
            in longer.stderr)
    expected = {**began, "resume": str(run), "trainer": {**began["trainer"], "max_steps": 100}}
    assert resolved(run) == expected  # the schedule (warmup 2, total 60) is the run's own
    assert list(tmp_path.glob("*/*")) == [run]  # no other run folder was made


# The same, with the real runner: a small model for 4 steps, then 2 more.
SMALL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
         "data.seq_len=16", "data.batch_size=2", "data.max_docs=60", "trainer.log_every=1", "trainer.val_batches=1",
         "trainer.val_every=2", "trainer.samples_per_val=0", "trainer.checkpoint_every=2", "decoder.max_new_tokens=4",
         "logger=none"]


def test_an_extended_run_trains_on_its_own_config_and_schedule(tmp_path, shared_cache, monkeypatch):
    from rizzrun.runner.train import run as train  # the first part in this process: one fewer start of torch

    monkeypatch.setenv("RIZZRUN_OUTPUTS", str(tmp_path))  # as launch() sets it for the second

    overrides = ["+recipe=tiny", *SMALL, "trainer.max_steps=4", "scheduler.warmup_steps=2", f"cache_dir={shared_cache}"]
    run = make_run(tmp_path / "2024-05-01" / "10-00-00-tiny", overrides, checkpoint=False)
    train(compose(overrides), run)
    real = "from rizzrun.cli import main; main()"
    began = resolved(run)
    longer = launch(tmp_path, f"resume={run}", "trainer.max_steps=6", code=real)
    assert longer.returncode == 0, longer.stderr
    assert (f"resuming {run} (changed: trainer.max_steps 4 -> 6; kept from the run: scheduler.total_steps 4)"
            in longer.stderr)
    assert resolved(run) == {**began, "resume": str(run), "trainer": {**began["trainer"], "max_steps": 6}}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}
    # warmup_cosine with W=2, N=4, m=0.1 and lr 3e-3: f = 1/2, 1, 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55,
    # then 0.1 from N on, so the two steps past the run's end stay at the floor.
    assert lr == pytest.approx({1: 1.5e-3, 2: 3e-3, 3: 1.65e-3, 4: 3e-4, 5: 3e-4, 6: 3e-4}, rel=1e-6)


# --- what cannot change is refused before torch ----------------------------------------------------------------

REFUSAL_PROBE = """
import json, sys
from rizzrun.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as e:
        results.append(e.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "lightning", "pytorch_lightning", "wandb"})
print(json.dumps({"codes": results, "heavy": heavy}))
"""


def test_unresumable_changes_are_refused_before_torch(tmp_path):
    run = make_run(tmp_path / "2024-05-01" / "10-00-00-tiny", ["+recipe=tiny", "trainer.max_steps=60"])
    saved = (run / layout.HYDRA_CONFIG).read_text()
    argvs = [[f"resume={run}", "model.n_layer=3"], [f"resume={run}", "tokenizer=bpe"],
             [f"resume={run}", "data.seq_len=64"], [f"resume={run}", "trainer.max_steps=100", "seed=7"],
             [f"resume={run}", "objective=goldfish"], ["+recipe=tiny", "resume=true", "attention=naive"]]
    result = launch(tmp_path, json.dumps(argvs), code=REFUSAL_PROBE)
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe == {"codes": [2] * len(argvs), "heavy": []}
    errors = result.stderr.splitlines()
    assert errors == [
        f"error: resume={run}: {FROZEN_TEXT} model.n_layer=3 (the run's: null); {FIX_TEXT}",
        f"error: resume={run}: {FROZEN_TEXT} tokenizer=bpe (the run's: tokenizer=byte); {FIX_TEXT}",
        f"error: resume={run}: {FROZEN_TEXT} data.seq_len=64 (the run's: 128); {FIX_TEXT}",
        f"error: resume={run}: {FROZEN_TEXT} seed=7 (the run's: 0); {FIX_TEXT}",
        f"error: resume={run}: {FROZEN_TEXT} objective=goldfish (the run's: objective=ce); {FIX_TEXT}",
        f"error: resume=true: {FROZEN_TEXT} attention=naive (the run's: attention=sdpa); {FIX_TEXT}",
    ]
    assert (run / layout.HYDRA_CONFIG).read_text() == saved
    assert not (run / layout.CONFIG).exists()


def test_several_frozen_keys_are_named_at_once(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=tiny"])
    with pytest.raises(ConfigError) as info:
        resumed_job([f"resume={run}", "data.batch_size=4", "model.d_model=64", "trainer.max_steps=500"], "config")
    assert str(info.value) == (f"resume={run}: {FROZEN_TEXT} data.batch_size=4 (the run's: 16), "
                               f"model.d_model=64 (the run's: null); {FIX_TEXT}")


def test_what_may_change_on_resume(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=goldfish_tiny", "trainer.max_steps=60"])
    before = job_config(["+recipe=goldfish_tiny"])
    job = resumed_job([f"resume={run}", "objective.k=8", "logger=csv", "trainer.val_every=30",
                       f"cache_dir={tmp_path}/cache", "data.cache_dir=${cache_dir}/moved"], "config")
    assert job.changed == ["logger wandb -> csv", f"cache_dir '{before['cache_dir']}' -> '{tmp_path}/cache'",
                           "data.cache_dir '${cache_dir}' -> '${cache_dir}/moved'",
                           f"objective.k {before['objective']['k']} -> 8",
                           f"trainer.val_every {before['trainer']['val_every']} -> 30"]
    cfg = job_config(job.overrides)
    assert (cfg["objective"]["k"], cfg["logger"], cfg["trainer"]["val_every"]) == (8, {"kind": "csv"}, 30)
    assert cfg["name"] == "goldfish_tiny" and cfg["trainer"]["max_steps"] == 60
    assert cfg["data"]["cache_dir"] == "${cache_dir}/moved"


# --- the saved config wins over today's defaults ---------------------------------------------------------

def test_the_runs_own_values_win_over_changed_defaults(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=tiny", "trainer.max_steps=60"])
    # Pretend the run began under an older conf/: other defaults, a key conf/ has since dropped,
    # one it has since gained (samples_per_val), and wandb as the default logger then being csv.
    saved = OmegaConf.to_container(OmegaConf.load(run / layout.HYDRA_CONFIG))
    saved["trainer"]["val_every"] = 30
    saved["scheduler"]["min_lr_ratio"] = 0.2
    saved["prompts"] = ["Old prompt", "it's a \\ back'slash"]
    del saved["trainer"]["samples_per_val"]
    saved["logger"] = {"kind": "csv"}
    OmegaConf.save(OmegaConf.create(saved), run / layout.HYDRA_CONFIG)
    settings = OmegaConf.load(run / layout.HYDRA_SETTINGS)
    settings.hydra.runtime.choices.logger = "csv"
    OmegaConf.save(settings, run / layout.HYDRA_SETTINGS)

    job = resumed_job([f"resume={run}", "trainer.log_every=5"], "config")
    today = job_config(["+recipe=tiny"])["trainer"]["samples_per_val"]
    expected = {**saved, "resume": str(run), "trainer": {**saved["trainer"], "log_every": 5, "samples_per_val": today}}
    assert job_config(job.overrides) == expected
    assert job.changed == [f"trainer.log_every {saved['trainer']['log_every']} -> 5"]
    assert job.kept == ["logger csv", "prompts ['Old prompt', \"it's a \\\\ back'slash\"]",
                        "scheduler.min_lr_ratio 0.2", "trainer.val_every 30"]
    assert job.summary() == f"resuming {run} (changed: {job.changed[0]}; kept from the run: {', '.join(job.kept)})"

    # what the user names still wins over the run's value, group or key
    job = resumed_job([f"resume={run}", "trainer.val_every=20", "logger=none"], "config")
    cfg = job_config(job.overrides)
    assert (cfg["trainer"]["val_every"], cfg["logger"]) == (20, {"kind": "none"})
    assert job.changed == ["logger csv -> none", "trainer.val_every 30 -> 20"]

    # a key today's conf/ no longer knows comes back, named as the run's own, and can be dropped
    saved["trainer"]["old_key"] = 5
    OmegaConf.save(OmegaConf.create(saved), run / layout.HYDRA_CONFIG)
    with pytest.raises(ConfigError) as info:
        resumed_job([f"resume={run}"], "config")
    assert str(info.value).startswith("trainer.old_key=5: unknown key of trainer")
    assert str(info.value).endswith(f"(the run's own value, kept from its {layout.HYDRA_CONFIG} over today's conf/: "
                                    "set trainer.old_key=VALUE, or drop it with ~trainer.old_key)")
    job = resumed_job([f"resume={run}", "~trainer.old_key"], "config")
    assert "old_key" not in job_config(job.overrides)["trainer"]
    assert job.changed == ["trainer.old_key 5 -> (absent)"]


def test_an_extension_keeps_the_runs_schedule(tmp_path):
    # the default warmup (null) adapts to total_steps, which keeps the run's 60 unless set
    run = make_run(tmp_path / "run", ["+recipe=tiny", "trainer.max_steps=60"])
    job = resumed_job([f"resume={run}", "trainer.max_steps=100"], "config")
    assert job.kept == ["scheduler.total_steps 60"]
    cfg = OmegaConf.to_container(compose(job.overrides), resolve=True)
    assert (cfg["trainer"]["max_steps"], cfg["scheduler"]["total_steps"]) == (100, 60)
    assert cfg["scheduler"]["warmup_steps"] == job_config(["+recipe=tiny"])["scheduler"]["warmup_steps"]
    # re-stretching the cosine is asked for by name
    job = resumed_job([f"resume={run}", "trainer.max_steps=100", "scheduler.total_steps=100"], "config")
    assert OmegaConf.to_container(compose(job.overrides), resolve=True)["scheduler"]["total_steps"] == 100
    assert job.kept == [] and job.changed == ["scheduler.total_steps '${trainer.max_steps}' -> 100",
                                              "trainer.max_steps 60 -> 100"]


# --- the pieces ----------------------------------------------------------------------------------------------

def test_merged_overrides_put_the_users_last_and_drop_what_they_replace():
    saved = ["+recipe=tiny", "trainer.max_steps=60", "+trainer.extra=1", "+trainer.other=2", "logger=csv",
             "resume=true", "seed=3"]
    user = ["+recipe=tiny", "trainer.max_steps=100", "trainer.extra=5", "+trainer.other=6", "logger=none",
            "resume=/runs/a"]
    # +trainer.extra=1 stays so that trainer.extra=5 has a key to set; +trainer.other=6 adds it anew
    assert merged_overrides(saved, user) == ["+trainer.extra=1", "seed=3"]


def test_literal_composes_back_to_the_value():
    values = ["plain", "it's", "a\\b", "ends\\", "quote\\'d", "${trainer.max_steps}", "x,y", "32", "true", "é ü",
              3, 2.5e-4, float("inf"), None, True, [1, "two", [3]], {"a": 1, "b": "c d"}]
    cfg = OmegaConf.to_container(compose([f"+probe{i}={literal(v)}" for i, v in enumerate(values)]), resolve=False)
    for i, value in enumerate(values):
        assert cfg[f"probe{i}"] == value and type(cfg[f"probe{i}"]) is type(value), value


def test_a_folder_without_hydras_files_is_refused(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=tiny"])
    (run / layout.HYDRA_OVERRIDES).unlink()
    with pytest.raises(ConfigError) as info:
        resumed_job([f"resume={run}"], "config")
    assert str(info.value) == (f"resume={run}: {run} holds no {layout.HYDRA_OVERRIDES}, so how that run was "
                               "configured is unknown; resume a run folder that rizzrun made, or start a new run")


def test_cfg_job_shows_the_resumed_job(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=tiny", "trainer.max_steps=60", "scheduler.warmup_steps=2"])
    result = launch(tmp_path, "--cfg", "job", f"resume={run}", "trainer.max_steps=100")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert (shown["trainer"]["max_steps"], shown["scheduler"]["warmup_steps"], shown["scheduler"]["total_steps"]) == (
        100, 2, 60)
    assert not (run / layout.CONFIG).exists()  # nothing ran


def test_with_overrides_keeps_the_flags():
    assert with_overrides(["-cn", "config", "seed=1", "resume=true"], ["seed=1", "resume=true"], ["a=1", "b=2"]) == [
        "-cn", "config", "a=1", "b=2"]


def test_a_run_whose_overrides_no_longer_compose_is_named(tmp_path):
    run = make_run(tmp_path / "run", ["+recipe=tiny"])
    OmegaConf.save(OmegaConf.create(["+recipe=tiny_gone"]), run / layout.HYDRA_OVERRIDES)
    with pytest.raises(ConfigError) as info:
        resumed_job([f"resume={run}"], "config")
    assert str(info.value).startswith(f"the run's own overrides ({layout.HYDRA_OVERRIDES}) no longer compose: "
                                      "+recipe=tiny_gone: no recipe 'tiny_gone'; did you mean 'tiny'?")


def test_resume_true_finds_the_newest_of_runs_started_in_the_same_second(tmp_path):
    """Two runs of `tiny` in one second get `<time>-tiny` and `<time>-tiny-1`; a run named
    `tiny-1` is not one of them."""
    from rizzrun.config.resume import latest_run

    def folder(name: str, saved_name: str) -> Path:
        run = tmp_path / "2026-12-01" / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "latest").write_text("step-000002\n")
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(f"name: {saved_name}\n")
        return run

    folder("10-00-00-tiny", "tiny")
    second = folder("10-00-00-tiny-1", "tiny")
    other = folder("10-00-05-tiny-1", "tiny-1")  # newer, but another run's name
    assert latest_run(tmp_path, "tiny") == second.absolute()
    assert latest_run(tmp_path, "tiny-1") == other.absolute()


def test_show_and_validate_see_the_resumed_job(tmp_path, capsys):
    """`rizzrun show/validate ... resume=PATH` look at what the resume would run: the run's own
    config with the new overrides, and the same refusals."""
    from rizzrun.cli import main

    run = make_run(tmp_path / "run", ["+recipe=tiny", "trainer.max_steps=60", "scheduler.warmup_steps=2"])
    with pytest.raises(SystemExit) as shown:
        main(["show", f"resume={run}", "trainer.max_steps=100"])
    assert shown.value.code in (None, 0)
    printed = yaml.safe_load(capsys.readouterr().out.split("\n# model dimensions")[0])
    assert (printed["trainer"]["max_steps"], printed["scheduler"]["warmup_steps"]) == (100, 2)
    assert printed["scheduler"]["total_steps"] == 60  # kept from the run: no re-stretched schedule
    with pytest.raises(SystemExit) as refused:
        main(["validate", f"resume={run}", "model.n_layer=3"])
    assert refused.value.code == 2
    assert "model.n_layer=3" in capsys.readouterr().err
