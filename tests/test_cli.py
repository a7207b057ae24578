"""The `rizzrun` command: subcommands in-process, the Hydra run path in subprocesses with
`rizzrun.runner.train` replaced by tests/fake_runner.py (so nothing trains here)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from rizzrun.cli import main

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Runs the CLI with the fake runner in place of rizzrun.runner.train.
WITH_FAKE_RUNNER = ("import sys; sys.path.insert(0, {tests!r}); import fake_runner; "
                    "sys.modules['rizzrun.runner.train'] = fake_runner; "
                    "from rizzrun.cli import main; main()").format(tests=str(TESTS))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `rizzrun ARGV` run in this process."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def run_cli(out_root: Path, *argv: str, code: str = WITH_FAKE_RUNNER) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIZZRUN_OUTPUTS": str(out_root), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


# --- help and listing -------------------------------------------------------------------------------

def test_help_says_bare_overrides_run_a_job(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert cli(capsys, "-h")[:2] == (0, out)
    assert "Bare overrides run a job: `rizzrun [OVERRIDES...]`" in " ".join(out.split())
    for command in ("list", "show", "validate", "generate"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command


def test_list_every_group_one_line_each(capsys):
    code, out, _ = cli(capsys, "list")
    assert code == 0
    # the expectation comes from the folders themselves, not from rizzrun's catalog
    conf, recipes = REPO / "conf", REPO / "recipes"
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and list(p.glob("*.yaml")))
    rows = {g: sorted(p.stem for p in (conf / g).glob("*.yaml")) for g in groups}
    rows["recipe"] = sorted(p.stem for p in recipes.glob("*.yaml"))
    width = max(map(len, rows))
    assert out.splitlines() == [f"{g:<{width}}  {', '.join(names)}" for g, names in rows.items()]
    assert out.splitlines()[0] == "attention       fam, hybrid, lightning, naive, sdpa, selective, ssmax, think"  # and one line by hand (hparams_search sets the width)


def test_list_group_describes_each_option(capsys):
    # the option yaml's first comment (two options may share a target) ...
    code, out, _ = cli(capsys, "list", "model")
    assert code == 0 and out.splitlines() == [
        "llama             Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention); sizes tiny, small, 1b, 7b.",
        "llama_pretrained  A Llama loaded from a local Hugging Face folder (config.json + safetensors): its shape,",
        "rwkv              RWKV-4 (arXiv 2305.13048), an RNN trained in parallel; sizes tiny, small, 169m."]
    # ... for groups without targets and for recipes too
    _, out, _ = cli(capsys, "list", "logger")
    assert out.splitlines()[0] == "csv    Metrics to a CSV file in the run folder only."
    _, out, _ = cli(capsys, "list", "recipe")
    about = dict(line.split(None, 1) for line in out.splitlines())
    assert about["tiny"] == "The default demo under its own name: a tiny Llama on the pydoc corpus, on a CPU."


def test_list_unknown_group(capsys):
    code, out, err = cli(capsys, "list", "modle")
    assert (code, out) == (2, "")
    assert err == ("error: list modle: no group 'modle'; did you mean 'model'? groups: attention, data, decoder, "
                   "hparams_search, logger, mlp, model, objective, optimizer, scheduler, tokenizer, trainer, recipe\n")


# --- show and validate ----------------------------------------------------------------------------------

def test_show_prints_the_composed_config_and_the_model_dims(capsys):
    code, out, _ = cli(capsys, "show", "+recipe=tiny", "model.n_layer=2")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["name"] == "tiny" and shown["model"]["n_layer"] == 2 and "hydra" not in shown
    assert shown["scheduler"]["total_steps"] == "${trainer.max_steps}"
    assert out.splitlines()[-1] == ("# model dimensions after the size preset: d_model=192, n_layer=2, n_head=6, "
                                    "n_kv_head=2, d_ff=512, max_seq_len=256, rope_theta=10000.0, norm_eps=1e-05, "
                                    "tie_embeddings=True")
    _, out, _ = cli(capsys, "show", "--resolve")
    assert yaml.safe_load(out)["scheduler"]["total_steps"] == 400


def test_show_bad_override(capsys):
    code, out, err = cli(capsys, "show", "model=lama")
    assert (code, out) == (2, "")
    models = ", ".join(sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
    assert err == f"error: model=lama: no option 'lama' in group 'model'; did you mean 'llama'? options: {models}\n"


def test_validate_ok_and_errors(capsys):
    assert cli(capsys, "validate", "+recipe=tiny") == (0, "ok\n", "")
    assert cli(capsys, "validate", "-m", "seed=0,1", "attention=sdpa,naive") == (0, "ok (4 jobs)\n", "")
    code, out, err = cli(capsys, "validate", "optimizer.lr=0", "trainer.precision=bf16")
    assert (code, out) == (2, "")
    assert err == ("error: 2 problems:\n"
                   "- optimizer.lr=0: out of range; allowed: lr > 0\n"
                   "- trainer.precision='bf16': not allowed; did you mean 'bf16-true'? "
                   "allowed: '32', 'bf16-mixed', '16-mixed', 'bf16-true'\n")


def test_validate_sweep_names_the_jobs_with_a_problem(capsys):
    code, _, err = cli(capsys, "validate", "-m", "optimizer.lr=0.1,0", "seed=1")
    assert code == 2
    assert err == "error: optimizer.lr=0: out of range; allowed: lr > 0 [in jobs: optimizer.lr=0]\n"


# --- the run path: checks before Hydra (in-process: nothing reaches Hydra) ---------------------------------

def test_bad_run_fails_before_hydra_with_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RIZZRUN_OUTPUTS", str(tmp_path))
    code, out, err = cli(capsys, "model.n_layr=2", "trainer.max_steps=0")
    assert (code, out) == (2, "")
    assert err.startswith("error: 3 problems:\n- model.n_layr=2: 'model' has no key 'n_layr'; did you mean 'model.n_layer'?")
    assert list(tmp_path.iterdir()) == []  # no run folder was made


def test_sweep_is_checked_job_by_job(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RIZZRUN_OUTPUTS", str(tmp_path))
    code, _, err = cli(capsys, "-m", "model.n_head=6,5", "model.n_kv_head=1")
    assert code == 2
    assert err.startswith("error: model.n_head=5: must divide d_model=192; allowed n_head: 1, 2, 3, 4, 6, 8, ")
    assert err.endswith(" [in jobs: model.n_head=5]\n")
    assert list(tmp_path.iterdir()) == []


def test_resume_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RIZZRUN_OUTPUTS", str(tmp_path))
    code, _, err = cli(capsys, "resume=true")
    assert code == 2
    assert err == (f"error: resume=true: no run named 'default' with a checkpoint under {tmp_path}; looked for "
                   f"{tmp_path}/<date>/<time>-default/checkpoints/latest; start afresh with resume=false, "
                   "or give the folder: resume=PATH\n")
    run = tmp_path / "2024-05-01" / "10-00-00-default"
    run.mkdir(parents=True)
    code, _, err = cli(capsys, f"resume={run}")
    assert (code, err) == (2, f"error: resume={run}: {run} holds no checkpoints/latest: that run saved no checkpoint; "
                              "resume a run that did (trainer.checkpoint_every sets how often they are saved)\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest").write_text("step-000010\n")
    code, _, err = cli(capsys, f"resume={run}")  # no .hydra/: how that run was configured is unknown
    assert (code, err) == (2, f"error: resume={run}: {run} holds no .hydra/config.yaml, so how that run was "
                              "configured is unknown; resume a run folder that rizzrun made, or start a new run\n")
    code, _, err = cli(capsys, "resume=true", f"hydra.run.dir={tmp_path}/elsewhere")
    assert (code, err) == (2, "error: resume=true: resume picks the run folder itself; drop hydra.run.dir, "
                              "or give the folder as resume=PATH\n")
    code, _, err = cli(capsys, f"resume={tmp_path}/nope")
    assert code == 2 and err.startswith(f"error: resume={tmp_path}/nope: no such run folder ({tmp_path}/nope); ")
    code, _, err = cli(capsys, "-m", "seed=1,2", "resume=true")  # a sweep resume (tests/test_sweeps.py) needs a sweep
    root = tmp_path / "multirun"
    assert (code, err) == (2, f"error: resume=true: no sweep under {root} (looked for {root}/<date>/<time>/sweep.json); "
                              "name the sweep's folder: hydra.sweep.dir=PATH resume=true, or drop resume=true for a "
                              "new sweep\n")


# --- the run path through Hydra (subprocesses, fake runner) ----------------------------------------------------

def test_single_run_gets_its_config_and_run_folder(tmp_path):
    result = run_cli(tmp_path, "+recipe=tiny", "seed=5")
    assert result.returncode == 0, result.stderr
    [folder] = list(tmp_path.glob("*/*-tiny"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", folder.parent.name) and re.fullmatch(r"\d{2}-\d{2}-\d{2}-tiny", folder.name)
    record = json.loads((folder / "fake_run.json").read_text())
    assert record == {"name": "tiny", "seed": 5, "resume": False, "run_dir": str(folder), "run_dir_type": "PosixPath",
                      "has_hydra_node": False, "model_target": "rizzrun.models.llama.Llama"}
    assert list(OmegaConf.load(folder / ".hydra" / "overrides.yaml")) == ["+recipe=tiny", "seed=5"]
    assert OmegaConf.load(folder / ".hydra" / "config.yaml").name == "tiny"
    assert not (folder / "error.txt").exists()


def test_hydra_run_dir_and_a_failing_single_run(tmp_path):
    target = tmp_path / "custom run"
    result = run_cli(tmp_path, f"hydra.run.dir='{target}'", "seed=13")
    assert result.returncode == 1
    assert "RuntimeError: fake failure for seed 13" in result.stderr
    assert "fake failure for seed 13" in (target / "error.txt").read_text()
    assert (target / ".hydra" / "config.yaml").is_file()


def test_multirun_keeps_going_past_a_failing_job(tmp_path):
    result = run_cli(tmp_path, "-m", "seed=1,13,2")
    assert result.returncode == 1
    [sweep] = list((tmp_path / "multirun").glob("*/*"))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2"]
    for job, seed in zip(jobs, (1, 13, 2)):
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()
        assert json.loads((sweep / job / "fake_run.json").read_text())["seed"] == seed
    assert [p.parent.name for p in sweep.glob("*/error.txt")] == ["1"]
    assert "RuntimeError: fake failure for seed 13" in (sweep / "1" / "error.txt").read_text()
    assert result.stderr.endswith(  # the table of rizzrun.sweeps (tests/test_sweeps.py has the real jobs)
        f"sweep {sweep}: 3 jobs, 2 done, 1 failed\n"
        "job  status  overrides  val loss  error\n"
        "0    done    seed=1     -\n"
        f"1    failed  seed=13    -         exception: RuntimeError: fake failure for seed 13 (traceback: {sweep / '1' / 'error.txt'})\n"
        "2    done    seed=2     -\n"
        f"continue the sweep with: rizzrun -m <the same overrides> resume=true (or hydra.sweep.dir={sweep} resume=true)\n")
    assert [json.loads((sweep / job / "status.json").read_text())["status"] for job in jobs] == ["done", "failed", "done"]


def test_multirun_all_ok_exits_0(tmp_path):
    result = run_cli(tmp_path, "-m", "attention=glob([n*,sd*])", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0", "1", "multirun.yaml", "sweep.json"]
    assert list(OmegaConf.load(tmp_path / "sweep" / "1" / ".hydra" / "overrides.yaml")) == ["attention=sdpa"]


def test_hydra_launcher_and_sweeper_groups_are_hydras(tmp_path):
    # hydra/launcher and hydra/sweeper are Hydra's own groups: picking one explicitly goes through
    # (a plugin such as submitit or optuna adds options there), an unknown one is Hydra's error.
    result = run_cli(tmp_path, "-m", "hydra/launcher=basic", "hydra/sweeper=basic", "seed=3,4",
                     f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr
    saved = OmegaConf.load(tmp_path / "sweep" / "multirun.yaml")
    assert saved.hydra.launcher._target_.endswith("BasicLauncher")
    assert saved.hydra.sweeper._target_.endswith("BasicSweeper")
    assert [json.loads((tmp_path / "sweep" / j / "fake_run.json").read_text())["seed"] for j in "01"] == [3, 4]
    bad = run_cli(tmp_path, "-m", "hydra/launcher=nosuch", "seed=3,4")
    assert (bad.returncode, bad.stderr) == (2, "error: hydra/launcher=nosuch: no option 'nosuch' in group "
                                           "'hydra/launcher'; options: basic, local, slurm, submitit_local, "
                                           "submitit_slurm\n")  # rizzrun's and hydra-submitit-launcher's


def test_resume_true_reuses_the_latest_run_folder(tmp_path):
    from test_resume_config import make_run

    older = make_run(tmp_path / "2024-05-01" / "10-00-00-tiny", ["+recipe=tiny", "trainer.max_steps=30"])
    newer = make_run(tmp_path / "2024-05-02" / "09-30-00-tiny", ["+recipe=tiny", "trainer.max_steps=60", "seed=5"])
    result = run_cli(tmp_path, "+recipe=tiny", "resume=true")
    assert result.returncode == 0, result.stderr
    assert f"resuming {newer} (nothing changed)\n" in result.stderr
    record = json.loads((newer / "fake_run.json").read_text())
    assert (record["run_dir"], record["resume"], record["seed"]) == (str(newer), True, 5)  # the run's own seed
    assert OmegaConf.load(newer / ".hydra" / "config.yaml").trainer.max_steps == 60
    assert list(OmegaConf.load(newer / ".hydra" / "overrides.yaml")) == [
        "trainer.max_steps=60", "seed=5", "+recipe=tiny", "resume=true"]
    assert not (older / "fake_run.json").exists()


# --- generate ---------------------------------------------------------------------------------------

@pytest.fixture
def run_folder(tmp_path):
    """A run folder as far as the commands check it before torch: config.yaml (with the run's
    decoder), and a checkpoint whose files match the digests in its meta.json."""
    folder = tmp_path / "2024-05-01" / "10-00-00-tiny"
    checkpoint = folder / "checkpoints" / "step-000010"
    checkpoint.mkdir(parents=True)
    files = {}
    for name, data in (("model.safetensors", b"weights"), ("state.pt", b"state")):
        (checkpoint / name).write_bytes(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "meta.json").write_text(json.dumps({"step": 10, "format": 2, "files": files}))
    (folder / "checkpoints" / "latest").write_text("step-000010\n")
    (folder / "config.yaml").write_text("seed: 0\ndecoder:\n  _target_: rizzrun.decoders.sample.Sample\n"
                                        "  max_new_tokens: 16\n  temperature: 0.7\n  seed: null\n")
    return folder


DECODERS = ", ".join(sorted(p.stem for p in (REPO / "conf" / "decoder").glob("*.yaml")))


def test_generate_help(capsys):
    code, out, _ = cli(capsys, "generate", "--help")
    assert code == 0
    for word in ("RUN_DIR", "decoder=NAME", "decoder.KEY=VALUE", "--prompt", "--model", "--checkpoint",
                 "decoder=typical decoder.typical_p=0.9"):
        assert word in " ".join(out.split()), word
    for gone in ("--temperature", "--top-k", "--top-p", "--seed", "--max-new-tokens", "--decoder"):
        assert gone not in out, gone  # decoder settings are overrides, not a fixed list of flags


def test_generate_calls_the_runner(capsys, monkeypatch, run_folder):
    import rizzrun.runner.generate as generate

    calls = []

    def fake(run_dir, prompt, overrides=(), checkpoint=None):
        calls.append((run_dir, prompt, list(overrides), checkpoint))
        return prompt + " world"

    monkeypatch.setattr(generate, "generate_from_run", fake)
    code, out, err = cli(capsys, "generate", str(run_folder), "--prompt", "hello", "decoder.max_new_tokens=5",
                         "decoder.temperature=0.5", "decoder.seed=3")
    assert (code, out, err) == (0, "hello world\n", "")
    # overrides before RUN_DIR and between the flags: the same
    code, out, _ = cli(capsys, "generate", "decoder=typical", str(run_folder), "-p", "hello", "decoder.typical_p=0.2",
                       "--checkpoint", "10")
    assert (code, out) == (0, "hello world\n")
    assert calls == [(run_folder, "hello", ["decoder.max_new_tokens=5", "decoder.temperature=0.5", "decoder.seed=3"], None),
                     (run_folder, "hello", ["decoder=typical", "decoder.typical_p=0.2"], "10")]


def test_the_decoder_is_the_runs_own_then_the_option_then_the_overrides(run_folder):
    """compose_decoder: the run's saved node as the base; decoder=NAME replaces it with
    conf/decoder/NAME.yaml; decoder.KEY=VALUE values are parsed as Hydra parses them."""
    from rizzrun.runner.generate import compose_decoder, run_decoder_node

    base = run_decoder_node(run_folder)
    own = compose_decoder(["decoder.top_k=5"], base=base)
    assert OmegaConf.to_container(own.node) == {"_target_": "rizzrun.decoders.sample.Sample", "max_new_tokens": 16,
                                                "temperature": 0.7, "seed": None, "top_k": 5}
    assert (own.option, own.given) == (None, {"top_k"})
    typical = compose_decoder(["decoder=typical", "decoder.typical_p=0.25", "decoder.seed=1", "~decoder.top_p",
                               "decoder.min_new_tokens=2"], base=base)
    expected = dict(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "decoder" / "typical.yaml")))
    expected.update(typical_p=0.25, seed=1, min_new_tokens=2)
    del expected["top_p"]
    assert OmegaConf.to_container(typical.node) == expected and typical.option == "typical"
    values = compose_decoder(["decoder=sample", "decoder.seed=null", "decoder.temperature=1e-1", "decoder.top_k=+3"])
    assert (values.node.seed, values.node.temperature, values.node.top_k) == (None, 0.1, 3)
    assert OmegaConf.to_container(compose_decoder([]).node) == OmegaConf.to_container(
        OmegaConf.load(REPO / "conf" / "decoder" / "greedy.yaml"))  # no run: greedy


def test_generate_errors(capsys, tmp_path, run_folder):
    from rizzrun.config import signatures

    code, _, err = cli(capsys, "generate", str(tmp_path / "nope"), "--prompt", "x")
    assert (code, err) == (2, f"error: {tmp_path / 'nope'}: no such run folder; give a folder under outputs/<date>/\n")
    (run_folder / "checkpoints" / "latest").unlink()
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x")
    assert (code, err) == (2, f"error: {run_folder}: holds no checkpoints/latest: the run saved no checkpoint (yet); "
                              "train longer than trainer.checkpoint_every steps, or pick another run\n")
    (run_folder / "checkpoints" / "latest").write_text("step-000010\n")
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder=greedyy")
    assert (code, err) == (2, f"error: decoder=greedyy: no option 'greedyy' in group 'decoder'; did you mean "
                              f"'greedy'? options: {DECODERS}\n")
    greedy = signatures.resolve("rizzrun.decoders.greedy.Greedy").file
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder=greedy", "decoder.top_k=5")
    assert (code, err) == (2, f"error: decoder.top_k=5: rizzrun.decoders.greedy.Greedy has no parameter 'top_k' "
                              f"({greedy}); parameters: max_new_tokens, repetition_penalty, min_new_tokens, compile\n")
    # without decoder=NAME the run's own decoder (Sample) is the one the keys are checked against
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder.temprature=0.5")
    assert code == 2 and err.startswith("error: decoder.temprature=0.5: rizzrun.decoders.sample.Sample has no "
                                        "parameter 'temprature' (") and "did you mean 'decoder.temperature'?" in err
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "seed=3")
    assert (code, err) == (2, "error: seed=3: not a decoder setting; give decoder=NAME and decoder.KEY=VALUE "
                              "(see rizzrun list decoder)\n")
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder.seed=1,2")
    assert (code, err) == (2, "error: decoder.seed=1,2: a sweep is not one decoder; give one value\n")
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder=sample", "decoder=typical")
    assert (code, err) == (2, "error: decoder=typical: decoder=sample is already given; pick one decoder\n")
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder=typical", "decoder.typical_p=2",
                       "decoder.top_k=-1")
    assert (code, err) == (2, "error: 2 problems:\n- decoder.typical_p=2: out of range; allowed: typical_p > 0 and <= 1\n"
                              "- decoder.top_k=-1: out of range; allowed: top_k >= 0\n")
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", "decoder.top_k=2.5")
    assert (code, err) == (2, "error: decoder.top_k=2.5: expected int, got float\n")
    code, _, err = cli(capsys, "generate", str(run_folder), str(tmp_path), "--prompt", "x")
    assert (code, err) == (2, f"error: {run_folder} {tmp_path}: more than one run folder; give one RUN_DIR, then "
                              "decoder=NAME / decoder.KEY=VALUE overrides\n")
    (run_folder / "config.yaml").unlink()
    code, _, err = cli(capsys, "generate", str(run_folder), "--prompt", "x")
    assert (code, err) == (2, f"error: {run_folder}: not a rizzrun run folder (no config.yaml); give a folder under "
                              "outputs/<date>/\n")


@pytest.mark.parametrize("flags, line", [
    (["--temperature", "0.5"], "--temperature 0.5: decoder settings are overrides now; write decoder.temperature=0.5"),
    (["--decoder", "greedy"], "--decoder greedy: decoder settings are overrides now; write decoder=greedy"),
    (["-n", "5"], "-n 5: decoder settings are overrides now; write decoder.max_new_tokens=5"),
    (["--top-p=0.9"], "--top-p 0.9: decoder settings are overrides now; write decoder.top_p=0.9"),
    (["--seed"], "--seed: decoder settings are overrides now; write decoder.seed=VALUE"),
    (["--temprature", "1"], "--temprature: no such option; did you mean decoder.temperature=1? options: --prompt, "
                            "-p, --model, --checkpoint; decoder settings: decoder=NAME decoder.KEY=VALUE"),
])
def test_the_old_decoder_flags_say_what_to_write(capsys, run_folder, flags, line):
    code, out, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", *flags)
    assert (code, out, err) == (2, "", f"error: {line} (see rizzrun generate --help)\n" if "no such" not in line
                                else f"error: {line}; see rizzrun generate --help\n")


@pytest.mark.parametrize("overrides, line", [
    (["decoder.temperature=0"],
     "decoder.temperature=0: out of range; allowed: temperature > 0 (for greedy decoding use decoder=greedy)"),
    (["decoder.temperature=-0.5"],
     "decoder.temperature=-0.5: out of range; allowed: temperature > 0 (for greedy decoding use decoder=greedy)"),
    (["decoder.temperature=nan"], "decoder.temperature=nan: not a finite number; allowed: temperature > 0"),
    (["decoder.top_p=1.5"], "decoder.top_p=1.5: out of range; allowed: top_p > 0 and <= 1"),
    (["decoder.top_p=0"], "decoder.top_p=0: out of range; allowed: top_p > 0 and <= 1"),
    (["decoder.top_k=-1"], "decoder.top_k=-1: out of range; allowed: top_k >= 0"),
    (["decoder.repetition_penalty=0"], "decoder.repetition_penalty=0: out of range; allowed: repetition_penalty > 0"),
    (["decoder.repetition_penalty=inf"],
     "decoder.repetition_penalty=inf: not a finite number; allowed: repetition_penalty > 0"),
    (["decoder.min_new_tokens=-2"], "decoder.min_new_tokens=-2: out of range; allowed: min_new_tokens >= 0"),
    (["decoder.seed=-1"], "decoder.seed=-1: out of range; allowed: seed >= 0"),
    (["decoder.max_new_tokens=-1"], "decoder.max_new_tokens=-1: out of range; allowed: max_new_tokens >= 0"),
    (["decoder=typical", "decoder.typical_p=1.5"], "decoder.typical_p=1.5: out of range; allowed: typical_p > 0 and <= 1"),
    (["decoder=typical", "decoder.typical_p=0"], "decoder.typical_p=0: out of range; allowed: typical_p > 0 and <= 1"),
])
def test_generate_value_out_of_the_decoders_range(capsys, run_folder, overrides, line):
    """The ranges are the decoders' own (each decoder raises for each of these values:
    test_decoder_options.py; the validator holds them as decoder.<key>), checked before torch."""
    code, out, err = cli(capsys, "generate", str(run_folder), "--prompt", "x", *overrides)
    assert (code, out, err) == (2, "", f"error: {line}\n")


def test_decoder_ranges_agree_with_the_decoders_own_checks():
    """Each value refused above is one Sample itself refuses, and each bound value it accepts
    passes the command's check (an independent statement of the same rules)."""
    from rizzrun.decoders.sample import Sample
    from rizzrun.runner.generate import compose_decoder
    from rizzrun.config import ConfigError

    for key, bad, good in (("temperature", 0.0, 1e-3), ("top_p", 0.0, 1.0), ("top_k", -1, 0), ("seed", -1, 0),
                           ("repetition_penalty", 0.0, 1e-3), ("min_new_tokens", -1, 0), ("max_new_tokens", -1, 0),
                           ("temperature", float("inf"), 1e6)):
        with pytest.raises(ValueError):
            Sample(**{key: bad})
        Sample(**{key: good})
        with pytest.raises(ConfigError, match=f"^decoder.{key}="):
            compose_decoder(["decoder=sample", f"decoder.{key}={bad}"])
        compose_decoder(["decoder=sample", f"decoder.{key}={good}"])


def _one_line(done: subprocess.CompletedProcess, starts: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {starts}"), done.stderr


def test_bad_options_are_one_line_from_the_real_command(tmp_path, run_folder):
    rizzrun = str(Path(sys.executable).with_name("rizzrun"))

    def run(*argv):
        return subprocess.run([rizzrun, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    _one_line(run("generate", str(run_folder), "--prompt", "x", "decoder.temperature=0"),
              "decoder.temperature=0: out of range")
    _one_line(run("generate", str(run_folder), "--prompt", "x", "decoder.temperature=abc"),
              "decoder.temperature='abc': expected float, got str")
    _one_line(run("generate", str(run_folder)), "--prompt / -p: required; see rizzrun generate --help")
    _one_line(run("generate", str(run_folder), "-p", "x", "--temprature", "1"), "--temprature: no such option")
    _one_line(run("generate", str(run_folder), "-p", "x", "decoder.x=["), "decoder.x=[: not a valid override")
    _one_line(run("eval", str(run_folder), "--prefix-len", "0"), "--prefix-len 0: out of range; allowed: >= 1")
    _one_line(run("eval", str(run_folder), "--max-documents", "many"), "--max-documents: ")
    _one_line(run("eval", str(run_folder), "--documents", str(tmp_path / "nope.jsonl")),
              f"--documents {tmp_path / 'nope.jsonl'}: no such file; allowed: train, val, or a .jsonl/.txt file")
    _one_line(run("eval", str(run_folder), "--output", "../eval.json"), "--output ../eval.json: not a file name")
    _one_line(run("eval", str(run_folder), "decoder=nope"), "decoder=nope: no option 'nope' in group 'decoder'")
    _one_line(run("eval", str(run_folder), "decoder.max_new_tokens=3"),
              "decoder.max_new_tokens=3: eval decodes exactly --continuation-len tokens (eval.continuation_len); "
              "set that instead")
    _one_line(run("eval", str(run_folder), "decoder.seed=0"),  # eval's base is greedy, not the run's sampler
              "decoder.seed=0: rizzrun.decoders.greedy.Greedy has no parameter 'seed'")
    _one_line(run("eval", str(run_folder), "--prefix-lenn", "3"),
              "--prefix-lenn: no such option; did you mean '--prefix-len'?")
    _one_line(run("export", str(run_folder)), "OUT_DIR: required")
    _one_line(run("export", str(tmp_path / "nope"), str(tmp_path / "hf")), f"{tmp_path / 'nope'}: no such run folder")
    # /sys refuses new entries even to root, where a chmod-ed folder would not
    _one_line(run("export", str(run_folder), "/sys/rizzrun-export/hf"),
              "/sys/rizzrun-export/hf: cannot write into /sys (")
    (tmp_path / "file").write_text("x")
    _one_line(run("export", str(run_folder), str(tmp_path / "file" / "hf")), f"{tmp_path / 'file' / 'hf'}: ")


# --- what the light commands import --------------------------------------------------------------------

HEAVY_PROBE = """
import sys
from rizzrun.cli import main
for argv in (["--help"], ["generate", "--help"], ["list"], ["list", "model"], ["show"], ["validate"],
             ["validate", "data.seq_len=999"], ["model.n_layr=2"], ["--cfg", "job"]):
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "lightning", "pytorch_lightning", "wandb",
                                                              "transformers", "datasets", "triton"})
print("HEAVY", heavy)
"""


def test_light_commands_import_no_torch_lightning_or_wandb(tmp_path):
    result = run_cli(tmp_path, code=HEAVY_PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY []"
    assert "_target_: rizzrun.models.llama.Llama" in result.stdout  # --cfg job went through Hydra
    assert "error: data.seq_len=999: longer than the model's max_seq_len=256" in result.stderr


def test_validation_error_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rizzrun.cli", "model.n_layr=2"], cwd=tmp_path,
                            env={**os.environ, "RIZZRUN_OUTPUTS": str(tmp_path)}, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("error: model.n_layr=2: 'model' has no key 'n_layr'; did you mean 'model.n_layer'? keys: "
                             "d_ff, d_model, from_pretrained, init_std, max_seq_len, n_head, n_kv_head, n_layer, norm_eps, "
                             "rope_scaling, rope_theta, size, tie_embeddings, vocab_size\n")


REFUSAL_PROBE = """
import sys
from rizzrun.cli import main
run, out = sys.argv[1], sys.argv[2]
for argv in (["generate", run, "-p", "x", "decoder.temperature=0"], ["generate", run, "-p", "x", "--checkpoint", "9"],
             ["generate", run, "-p", "x", "decoder=typical", "decoder.typical_p=1.5"],
             ["generate", run, "-p", "x", "decoder.temprature=1"], ["generate", run, "-p", "x", "decoder=nope"],
             ["eval", run, "--prefix-len", "0"], ["eval", run, "decoder=sample", "decoder.seed=-1"],
             ["export", run, "/sys/rizzrun-export"], ["export", run + "x", out]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 2, (argv, e.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "lightning", "wandb", "transformers"})
print("HEAVY", heavy)
"""


def test_generate_eval_export_refuse_before_importing_torch(tmp_path, run_folder):
    result = subprocess.run([sys.executable, "-c", REFUSAL_PROBE, str(run_folder), str(tmp_path / "hf")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY []"
    assert len(result.stderr.splitlines()) == 9 and all(line.startswith("error: ") for line in result.stderr.splitlines())


# --- decoders on a real run, as users run the command -------------------------------------------------------

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))  # the installed console script
# A tiny run that samples with locally typical sampling at its one validation (step 2).
TYPICAL_RUN = ["+recipe=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1",
               "model.d_ff=64", "data.seq_len=32", "data.batch_size=4", "data.max_docs=300", "trainer.max_steps=2",
               "trainer.val_every=2", "trainer.checkpoint_every=2", "trainer.log_every=1", "trainer.val_batches=1",
               "trainer.samples_per_val=2", "decoder=typical", "decoder.typical_p=0.5", "decoder.max_new_tokens=8",
               "scheduler.warmup_steps=1", "logger=none", "trainer.num_threads=1"]


def _rizzrun(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RIZZRUN, *argv], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RIZZRUN_OUTPUTS": str(cwd / "outputs"), "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def typical_run(tmp_path_factory, shared_cache):
    root = tmp_path_factory.mktemp("typical")
    done = _rizzrun(*TYPICAL_RUN, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def typical_loaded(typical_run):
    """(config, tokenizer, model) of the typical run's checkpoint, loaded once, on one thread."""
    import torch

    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    return load_run(typical_run)


def test_a_run_with_decoder_typical_trains_and_writes_its_samples(typical_run, typical_loaded):
    """The samples at step 2 are locally typical samples of the step-2 checkpoint: recomputed
    here with a Typical built by hand (not from the config), seeded as the runner seeds them."""
    from rizzrun.decoders.typical import Typical
    from rizzrun.runner.task import sample_texts

    rows = [json.loads(line) for line in (typical_run / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in rows] == [(2, "Return the"), (2, "This function")]
    cfg, tokenizer, model = typical_loaded
    assert cfg.decoder._target_ == "rizzrun.decoders.typical.Typical" and cfg.decoder.typical_p == 0.5
    texts = sample_texts(model, Typical(max_new_tokens=8, typical_p=0.5), tokenizer, ["Return the", "This function"],
                         seed=int(cfg.seed) * 1_000_003 + 2)
    assert [r["text"] for r in rows] == texts
    assert all(len(t) > len(p) for t, p in zip(texts, ["Return the", "This function"]))


def test_generate_with_decoder_overrides_from_the_real_command(typical_run, typical_loaded, tmp_path):
    """`rizzrun generate RUN decoder=typical decoder.typical_p=0.9 decoder.seed=1` prints what a
    Typical(typical_p=0.9, seed=1) built by hand continues the prompt with (the overrides reached
    the decoder; another process, the same text); a bad value is one line before the model loads."""
    from rizzrun.decoders.typical import Typical
    from rizzrun.runner.task import sample_texts

    done = _rizzrun("generate", str(typical_run), "--prompt", "Return the", "decoder=typical",
                    "decoder.typical_p=0.9", "decoder.seed=1", "decoder.max_new_tokens=12", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cfg, tokenizer, model = typical_loaded
    [text] = sample_texts(model, Typical(max_new_tokens=12, typical_p=0.9, seed=1), tokenizer, ["Return the"],
                          seed=int(cfg.seed))
    assert done.stdout == text + "\n" and len(text) > len("Return the")
    # the run's own decoder (Typical, typical_p=0.5) is the base without decoder=NAME
    bad = _rizzrun("generate", str(typical_run), "--prompt", "x", "decoder.typical_p=1.5", cwd=tmp_path)
    _one_line(bad, "decoder.typical_p=1.5: out of range; allowed: typical_p > 0 and <= 1")


def test_eval_with_a_sampling_decoder_from_the_real_command(typical_run, tmp_path):
    """`rizzrun eval RUN decoder=sample decoder.seed=0`: eval.json records the decoder it used
    (max_new_tokens = the continuation length), the metrics are logged apart from greedy's, and
    the same call in-process gives the same rows (seeded: reproducible)."""
    from rizzrun.runner.evaluate import evaluate_run
    from rizzrun.runner.metrics import read_metrics

    window = ["--max-documents", "3", "--prefix-len", "8", "--continuation-len", "6"]
    done = _rizzrun("eval", str(typical_run), "decoder=sample", "decoder.seed=0", *window, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((typical_run / "eval.json").read_text())
    sample = dict(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "decoder" / "sample.yaml")))
    assert saved["decoder"] == {**sample, "seed": 0, "max_new_tokens": 6} and saved["decoder_option"] == "sample"
    assert done.stdout.splitlines()[0] == f"decoder: sample {json.dumps(saved['decoder'])}"
    assert saved["memorization"]["documents"] == 3
    logged = read_metrics(typical_run / "metrics.jsonl")[-1]
    assert logged["mem_by_sample/rougeL"] == saved["memorization"]["rougeL"] and "mem/rougeL" not in logged
    again = evaluate_run(typical_run, output="again.json", decoder=["decoder=sample", "decoder.seed=0"],
                         max_documents=3, prefix_len=8, continuation_len=6)
    assert again["memorization"]["rows"] == saved["memorization"]["rows"] and again["decoder"] == saved["decoder"]
    # (greedy, the default, is logged as mem/*: test_memorization.py)
