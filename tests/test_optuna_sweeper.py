"""rizzrun's Optuna sweeper (hydra_plugins/rizzrun_optuna, `hydra/sweeper=optuna`): the search-space
syntax against distributions derived by hand, searches of a toy Hydra app run as real processes
(a quadratic with a known minimum, failing trials, a sqlite study continued), the checks made
before a search starts, and one real `rizzrun -m +recipe=tiny +hparams_search=tiny_lr`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.rizzrun_optuna._objective import objective_of
from hydra_plugins.rizzrun_optuna._search_space import Dimension, Fixed, SearchSpaceError, parse_entry, search_space
from rizzrun.config import ConfigError
from rizzrun.config.check import check_jobs

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = Path(sys.executable).with_name("rizzrun")


# --- the search-space syntax -----------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("x=a,b,c", CategoricalDistribution(["a", "b", "c"])),
    ("x=choice(1,2.5,true,'a b')", CategoricalDistribution([1, 2.5, True, "a b"])),
    ("x=shuffle(choice(3,1,2))", CategoricalDistribution([3, 1, 2])),
    # Hydra's range excludes stop: range(1,5) is 1..4, range(0,10,3) is 0,3,6,9, range(5,1,-1) is 5..2.
    ("x=range(1,5)", IntDistribution(1, 4)),
    ("x=range(4)", IntDistribution(0, 3)),
    ("x=range(0,10,3)", IntDistribution(0, 9, step=3)),
    ("x=range(5,1,-1)", IntDistribution(2, 5)),
    ("x=range(0.1,0.5,0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("x=range(1.0,0.0,-0.25)", FloatDistribution(0.25, 1.0, step=0.25)),
    # interval() is always float in Hydra; int() makes it an integer interval.
    ("x=interval(1,5)", FloatDistribution(1.0, 5.0)),
    ("x=int(interval(1,5))", IntDistribution(1, 5)),
    ("x=tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
    ("x=tag(log, int(interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
])
def test_each_form_maps_to_the_distribution_derived_by_hand(line, expected):
    entry = parse_entry(line)
    assert isinstance(entry, Dimension) and entry.name == "x"
    assert entry.distribution == expected


@pytest.mark.parametrize("line", ["x=range(1,5)", "x=range(0,10,3)", "x=range(5,1,-1)", "x=range(0.1,0.5,0.1)"])
def test_a_range_offers_exactly_the_values_hydras_range_lists(line):
    """A second formulation: the values of the distribution's grid are the ones Hydra's basic sweeper runs."""
    [override] = OverridesParser.create().parse_overrides([line])
    listed = sorted(override.sweep_iterator())
    d = parse_entry(line).distribution
    grid = [d.low + k * d.step for k in range(round((d.high - d.low) / d.step) + 1)]
    assert grid == pytest.approx(listed)


def test_shuffled_range_is_a_categorical_of_its_values():
    d = parse_entry("x=shuffle(range(3))").distribution
    assert isinstance(d, CategoricalDistribution) and sorted(d.choices) == [0, 1, 2]


def test_a_chosen_value_is_written_back_as_an_override_hydra_reads_as_that_value():
    entry = parse_entry("+opt.x=choice('a b','a,b',[1,2],{k: 1},true,3)")
    assert entry.key_element == "+opt.x" and entry.name == "opt.x"
    assert entry.distribution.choices == ("a b", "a,b", "[1,2]", "{k:1}", True, 3)
    parser = OverridesParser.create()
    for choice, value in zip(entry.distribution.choices, ["a b", "a,b", [1, 2], {"k": 1}, True, 3]):
        [back] = parser.parse_overrides([entry.override(choice)])
        assert back.key_or_group == "opt.x" and back.is_add() and not back.is_sweep_override()
        assert back.value() == value and type(back.value()) is type(value)
    number = parse_entry("lr=tag(log, interval(1e-5, 1e-2))")
    [back] = parser.parse_overrides([number.override(3.1e-5)])
    assert back.value() == 3.1e-5


def test_plain_values_and_deletions_are_fixed_for_every_trial():
    assert parse_entry("+recipe=tiny") == Fixed("recipe", "+recipe=tiny")
    assert parse_entry("~eval") == Fixed("eval", "~eval")
    assert parse_entry("db@hydra.x=mysql") == Fixed("db@hydra.x", "db@hydra.x=mysql")


def test_search_space_takes_params_then_the_command_line_which_wins_in_place():
    params = {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "seed": 3, "model.n_layer": "1,2"}
    entries = search_space(params, ["+recipe=tiny", "seed=0,1", "optimizer.lr=0.01"])
    assert [e.name for e in entries] == ["optimizer.lr", "seed", "model.n_layer", "recipe"]
    assert entries[0] == Fixed("optimizer.lr", "optimizer.lr=0.01")
    assert entries[1].distribution == CategoricalDistribution([0, 1])
    assert entries[2].distribution == CategoricalDistribution([1, 2])
    assert search_space({"seed": 3}, [])[0] == Fixed("seed", "seed=3")


def test_glob_picks_among_the_groups_options():
    entry = parse_entry("model=glob(ll*)", options_of=lambda group: {"model": ["llama", "llava", "rwkv"]}[group])
    assert entry.distribution == CategoricalDistribution(["llama", "llava"])


@pytest.mark.parametrize("value, words", [
    ("tag(lg, interval(1e-3, 1))", "unknown tag lg; the one tag understood is log"),
    ("tag(log, choice(1, 2))", "tag(log, ...) applies to interval(low,high) only"),
    ("tag(log, interval(0, 1))", "low > 0"),
    ("interval(5, 1)", "low <= high"),
    ("range(5, 1)", "the range holds no value"),
    ("interval(1e-3", "not valid override syntax (no viable alternative at input 'interval(1e-3')"),
])
def test_bad_search_entries_are_one_line_each_naming_the_entry(value, words):
    with pytest.raises(SearchSpaceError) as info:
        search_space({"optimizer.lr": value, "seed": "choice()"}, [f"x={value}"])
    problems = info.value.problems
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert problems[0].startswith(f"hydra.sweeper.params.optimizer.lr={value}: ") and words in problems[0]
    assert problems[1].startswith("hydra.sweeper.params.seed=choice(): not valid override syntax (")
    assert problems[2].startswith(f"x={value}: ") and words in problems[2]


def test_objective_is_a_number_as_is_or_the_value_at_a_dotted_key():
    summary = {"val_loss": 2.5, "step": 4, "eval": {"loss": 1.25, "none": None}}
    assert objective_of(summary, "val_loss") == (2.5, "")
    assert objective_of(summary, "eval.loss") == (1.25, "")
    assert objective_of(0.75, "val_loss") == (0.75, "")
    assert objective_of(3, "anything") == (3.0, "")
    assert objective_of(None, "val_loss") == (None, "it returned no result (a failed job)")
    assert objective_of(summary, "eval.none") == (None, "its 'eval.none' is null")
    assert objective_of(summary, "val") == (None, "its result has no 'val' (at 'val': eval, step, val_loss)")
    assert objective_of({"val_loss": float("nan")}, "val_loss") == (None, "its objective is nan")
    assert objective_of({"val_loss": "low"}, "val_loss") == (None, "its result is a str, not a number")


# --- searches of a toy Hydra app, as real processes ------------------------------------------------

TOY_APP = '''
import math
import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

ConfigStore.instance().store(name="toy", node={
    "defaults": ["_self_", {"override hydra/sweeper": "optuna"}],
    "x": 0.0, "y": -1, "z": 0,
    "hydra": {"sweeper": {"objective": "metrics.loss"}},
})

def extend(cfg, trial):
    """A custom search space: one more parameter, suggested in Python."""
    trial.suggest_int("z", 0, 3)

@hydra.main(config_path=None, config_name="toy", version_base="1.3")
def main(cfg):
    job = HydraConfig.get().job.num
    loss = (cfg.x - 2.0) ** 2 + (cfg.y + 1) ** 2 + cfg.z
    how = (cfg.get("fail_jobs") or {}).get("j%d" % job)
    # What this job computed, so that the test can check the sweeper's bookkeeping on its own.
    with open(HydraConfig.get().runtime.output_dir + "/loss.txt", "w") as f:
        f.write(repr(loss if how is None else None))
    if how == "raise":
        raise RuntimeError("job %d fails on purpose" % job)
    if how == "nanloss":
        return {"metrics": {"loss": math.nan}}
    if how == "none":
        return None
    if how == "missing":
        return {"metrics": {}}
    return {"metrics": {"loss": loss}}

if __name__ == "__main__":
    main()
'''


def toy_search(tmp_path: Path, *overrides: str, sweep: str = "sweep", check: bool = True) -> subprocess.CompletedProcess:
    app = tmp_path / "toy.py"
    app.write_text(TOY_APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(app), "-m", f"hydra.sweep.dir={tmp_path / sweep}", *overrides],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_losses(sweep_dir: Path) -> dict[str, float | None]:
    return {p.parent.name: eval(p.read_text()) for p in sweep_dir.glob("*/loss.txt")}  # noqa: S307 - our own repr


def test_tpe_with_a_seed_finds_the_minimum_of_a_quadratic(tmp_path):
    result = toy_search(tmp_path, "x=interval(-10,10)", "hydra.sweeper.n_trials=20", "hydra.sweeper.sampler.seed=0",
                        "+hydra.sweeper.sampler.n_startup_trials=8")
    sweep = tmp_path / "sweep"
    results = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    losses = job_losses(sweep)
    assert len(losses) == 20 and results["trials"] == {"complete": 20, "fail": 0, "total": 20}
    best_job = min(losses, key=losses.get)
    # The sweeper's best is the app's own minimum, and TPE got near the true minimum 0 at x = 2.
    assert results["best_value"] == losses[best_job] and results["best_job_dir"] == str(sweep / best_job)
    assert results["best_value"] < 0.01 and abs(results["best_params"]["x"] - 2) < 0.1, results
    assert results["storage"] == f"sqlite:///{sweep / 'optuna.db'}" and results["study_name"] == "search"
    assert f"Best metrics.loss: {results['best_value']}" in result.stderr + result.stdout
    # A second formulation: Optuna's own ask/tell loop with the same sampler asks the same x's.
    replay = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8))
    for _ in range(20):
        trial = replay.ask({"x": FloatDistribution(-10, 10)})
        replay.tell(trial, (trial.params["x"] - 2.0) ** 2)
    study = optuna.load_study(study_name="search", storage=results["storage"])
    assert [t.params for t in study.trials] == [t.params for t in replay.trials]
    assert [t.value for t in study.trials] == [t.value for t in replay.trials]


def test_failed_trials_are_told_as_failed_and_the_search_goes_on(tmp_path):
    fail = "+fail_jobs={j1: raise, j2: nanloss, j4: none, j5: missing}"
    result = toy_search(tmp_path, "x=interval(-10,10)", "hydra.sweeper.n_trials=7", "hydra.sweeper.n_jobs=3",
                        "hydra.sweeper.sampler.seed=1", fail)
    sweep = tmp_path / "sweep"
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    study = optuna.load_study(study_name="search", storage=results.storage)
    states = {t.user_attrs["job_dir"]: t.state for t in study.trials}
    assert states == {str(sweep / str(j)): TrialState.FAIL if j in (1, 2, 4, 5) else TrialState.COMPLETE
                      for j in range(7)}
    completed = {k: v for k, v in job_losses(sweep).items() if v is not None}
    assert sorted(completed) == ["0", "3", "6"]
    assert results.best_value == min(completed.values())
    log = result.stderr + result.stdout
    assert "Trial 1 (" in log and "failed: the job raised RuntimeError: job 1 fails on purpose; the search goes on" in log
    assert "failed: its objective is nan" in log and "failed: it returned no result (a failed job)" in log
    assert "failed: its result has no 'metrics.loss' (at 'loss': no keys)" in log


def test_a_sqlite_study_is_continued_by_a_second_search(tmp_path):
    storage = f"sqlite:///{tmp_path / 'db' / 'toy.db'}"
    common = ["x=interval(-10,10)", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=toy",
              "hydra.sweeper.sampler.seed=2", "hydra.sweeper.n_trials=3"]
    toy_search(tmp_path, *common, sweep="first")
    first = OmegaConf.load(tmp_path / "first" / "optimization_results.yaml")
    toy_search(tmp_path, *common, "hydra.sweeper.custom_search_space=toy.extend", sweep="second")
    second = OmegaConf.load(tmp_path / "second" / "optimization_results.yaml")
    # n_trials counts the trials of this invocation; the study holds both invocations' trials.
    assert first.trials.total == 3 and second.trials.total == 6
    losses = {**{f"first/{k}": v for k, v in job_losses(tmp_path / "first").items()},
              **{f"second/{k}": v for k, v in job_losses(tmp_path / "second").items()}}
    assert len(losses) == 6 and second.best_value == min(losses.values())
    study = optuna.load_study(study_name="toy", storage=storage)
    assert [t.number for t in study.trials] == list(range(6))
    assert [Path(t.user_attrs["job_dir"]).parent.name for t in study.trials] == ["first"] * 3 + ["second"] * 3
    # The second invocation's sampler is seeded with seed + the 3 trials already there, so it does
    # not repeat the first one's draws: Optuna's own TPESampler(seed=5) given those 3 trials asks the same x.
    replay = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=2 + 3))
    for trial in study.trials[:3]:
        replay.add_trial(trial)
    assert replay.ask({"x": FloatDistribution(-10, 10)}).params["x"] == study.trials[3].params["x"]
    assert study.trials[3].params["x"] not in [t.params["x"] for t in study.trials[:3]]
    # The custom search space added z to the second invocation's trials, as overrides of their jobs.
    for trial in study.trials[3:]:
        assert 0 <= trial.params["z"] <= 3 and f"z={trial.params['z']}" in trial.user_attrs["overrides"]
    # The same study asked to maximise instead: refused, not mixed.
    refused = toy_search(tmp_path, *common, "hydra.sweeper.direction=maximize", sweep="third", check=False)
    assert refused.returncode != 0
    assert "hydra.sweeper.direction=maximize: study 'toy'" in refused.stderr and "was made to minimize" in refused.stderr


# --- rizzrun: the checks before a search, and a real one -------------------------------------------

SEARCH = ["+recipe=tiny", "+hparams_search=tiny_lr"]


def test_check_composes_the_edges_of_the_search_space_not_a_grid():
    configs = check_jobs([*SEARCH, "seed=range(100)"], multirun=True)
    edges = [(c.optimizer.lr, c.optimizer.weight_decay, c.seed) for c in configs]
    assert edges == [(1e-4, 0.0, 0), (3e-2, 0.0, 0), (1e-4, 0.01, 0), (1e-4, 0.1, 0), (1e-4, 0.0, 99)]
    assert all(c.hydra.sweeper.study_name == "tiny-tiny_lr" for c in configs)


@pytest.mark.parametrize("argv, expected", [
    (["optimizer.lr=tag(lg,interval(1e-3,1))"],
     "error: optimizer.lr=tag(lg,interval(1e-3,1)): unknown tag lg; the one tag understood is log\n"),
    (["hydra.sweeper.n_trials=0"], "error: hydra.sweeper.n_trials=0: must be a whole number >= 1\n"),
    (["optimizer.weight_decay=-1,0"],
     "error: optimizer.weight_decay=-1: out of range; allowed: weight_decay >= 0 "
     "[in jobs: optimizer.lr=0.0001 optimizer.weight_decay=-1; optimizer.lr=0.03 optimizer.weight_decay=-1]\n"),
])
def test_a_bad_search_stops_before_hydra_with_one_line_and_exit_2(capsys, argv, expected):
    from rizzrun.config.launch import launch

    assert launch(["-m", *SEARCH, *argv]) == 2
    assert capsys.readouterr().err == expected


def test_the_search_group_is_listed_and_added_with_a_plus(capsys):
    from rizzrun.cli import main

    with pytest.raises(SystemExit):
        main(["list", "hparams_search"])
    assert capsys.readouterr().out.startswith("tiny_lr  Optuna (TPE) search of AdamW's learning rate")
    with pytest.raises(ConfigError) as info:
        check_jobs(["+recipe=tiny", "hparams_search=tiny_lr"], multirun=True)
    assert str(info.value) == ("hparams_search=tiny_lr: no defaults list picks an option of group 'hparams_search', "
                               "so one is added, not chosen; write +hparams_search=tiny_lr")


TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "data.seq_len=32", "data.batch_size=4", "trainer.max_steps=3", "trainer.val_every=3",
        "trainer.checkpoint_every=3", "trainer.val_batches=1", "trainer.samples_per_val=0",
        "scheduler.warmup_steps=1", "data.max_docs=200", "logger=csv"]


def test_rizzrun_search_of_the_tiny_recipe_reports_its_best_trial(tmp_path, shared_cache):
    env = {**os.environ, "RIZZRUN_OUTPUTS": str(tmp_path / "outputs"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(RIZZRUN), "-m", *SEARCH, "hydra.sweeper.n_trials=2", *TINY], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = (tmp_path / "outputs" / "multirun").glob("*/*")
    results = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    summaries = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries.values())
    best_dir = min(summaries, key=lambda d: summaries[d]["val_loss"])
    assert results["best_value"] == min(s["val_loss"] for s in summaries.values())
    assert math.isfinite(results["best_value"]) and results["best_job_dir"] == str(best_dir)
    # The best parameters are the ones the best job ran with.
    ran = dict(o.split("=", 1) for o in OmegaConf.load(best_dir / ".hydra" / "overrides.yaml"))
    assert {k: float(ran[k]) for k in results["best_params"]} == results["best_params"]
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    assert 1e-4 <= results["best_params"]["optimizer.lr"] <= 3e-2
    # The study is kept beside the outputs, named by the recipe's run name.
    db = tmp_path / "outputs" / "searches" / "tiny-tiny_lr.db"
    assert results["storage"] == f"sqlite:///{db}" and db.is_file()
    study = optuna.load_study(study_name="tiny-tiny_lr", storage=results["storage"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert "Best val_loss: " in result.stderr + result.stdout
