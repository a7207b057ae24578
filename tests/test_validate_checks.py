"""What `validate` checks without torch beyond binding: component specs found from the `_target_`
(never importing the component), data paths, what must fit in the model's max_seq_len, the GPU,
and the adaptive warmup. Expected messages are worked out by hand from the values given."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rizzrun.config import ConfigError, check_jobs, devices, load, specs
from test_config import errors_of, only_error

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))


def validate_cli(*argv: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([RIZZRUN, "validate", *argv], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, **(env or {})}, **kw)


# --- specs: found from the _target_, never importing the component --------------------------------

def test_the_validator_names_no_target():
    tree = ast.parse((REPO / "rizzrun/config/validate.py").read_text())
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [t for t in texts if "rizzrun." in t and "rizzrun.config" not in t]
    assert all(m is None or m.startswith(("rizzrun.config", "omegaconf", "__future__", "typing")) for m in imports)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """fakepkg/comp.py defines Comp and raises if imported; fakepkg/api.py re-exports it;
    fakepkg/comp_spec.py holds its rules. (Importing a spec runs its package's __init__, which
    rizzrun keeps torch-free and lazy, as here.)"""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from .comp import Comp\n")
    (pkg / "comp.py").write_text(textwrap.dedent("""\
        raise RuntimeError("a spec lookup must not import the component")


        class Comp:
            batch_kind = "lm"

            def __init__(self, width: int = 3, seq_len: int = 8, batch_size: int = 2):
                pass
        """))
    (pkg / "comp_spec.py").write_text(textwrap.dedent("""\
        def check(node, path):
            width = node.get("width")
            return [f"{path}.width={width}: odd widths are not allowed here"] if width % 2 else []
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m.split(".")[0] == "fakepkg"]:
        del sys.modules[name]


@pytest.mark.parametrize("target", ["fakepkg.comp.Comp", "fakepkg.api.Comp"])  # defined there / re-exported
def test_a_spec_is_found_from_the_target_without_importing_it(fake_package, target):
    spec = specs.spec_of(target)
    assert spec is not None and spec.__name__ == "fakepkg.comp_spec"
    node = f"+data={{_target_: {target}, width: 5, seq_len: 8, batch_size: 2}}"
    assert only_error(["~data", node]) == "data.width=5: odd widths are not allowed here"
    load(["~data", node.replace("width: 5", "width: 4")])
    assert "fakepkg.comp" not in sys.modules and "fakepkg.api" not in sys.modules


def test_components_without_a_spec_have_none():
    assert specs.spec_of("rizzrun.decoders.sample.Sample") is None
    assert specs.spec_of("rizzrun.models.llama.Llama").__name__ == "rizzrun.models.llama_spec"
    assert specs.spec_of("no.such.Thing") is None


def test_show_prints_dimensions_through_the_spec():
    done = subprocess.run([RIZZRUN, "show", "model.n_layer=2", "model.max_seq_len=300"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    # tiny preset (d_model 192, 6 heads, 2 kv heads, d_ff 512) with the two overrides
    assert done.stdout.splitlines()[-1] == (
        "# model dimensions after the size preset: d_model=192, n_layer=2, n_head=6, n_kv_head=2, d_ff=512, "
        "max_seq_len=300, rope_theta=10000.0, norm_eps=1e-05, tie_embeddings=True")


# --- data paths -----------------------------------------------------------------------------------

def test_hf_data_path_must_exist_when_it_is_local(tmp_path):
    missing = tmp_path / "nope"
    assert only_error(["data=hf", f"data.path={missing}"]) == (
        f"data.path='{missing}': no such file or folder (a path starting with /, ./, ../ or ~ is never looked "
        "up on the Hub); give an existing local folder or file, or a Hub dataset name")
    assert only_error(["data=hf", f"data.path={tmp_path}/*.parquet"]) == (
        f"data.path='{tmp_path}/*.parquet': the pattern matches no file; give an existing local folder, file or glob")
    (tmp_path / "a.parquet").write_bytes(b"")
    load(["data=hf", f"data.path={tmp_path}/*.parquet"])
    load(["data=hf", f"data.path={tmp_path}"])
    load(["data=hf", "data.path=HuggingFaceFW/fineweb-edu"])  # a Hub name: looked up at run time only


def test_text_files_must_exist(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("text\n")
    assert only_error(["data=text", f"data.train_files=[{good},{tmp_path / 'b.txt'}]"]) == (
        f"data.train_files=['{good}', '{tmp_path / 'b.txt'}']: '{tmp_path / 'b.txt'}': no such file; "
        "give existing .txt, .jsonl or .parquet files (or globs)")
    assert only_error(["data=text", f"data.train_files={good}", f"data.val_files={tmp_path}"]) == (
        f"data.val_files='{tmp_path}': {tmp_path} is a folder, not a file")
    load(["data=text", f"data.train_files={tmp_path}/*.txt", f"data.val_files=[{good}]"])


DROP_AND_CHECK = """
import os, sys
from rizzrun.config import ConfigError, check_jobs
# Every import and source read done as root (hydra.* goes through Hydra itself, not the cache).
check_jobs(["data=hf", "data.path=" + sys.argv[2], "hydra.job.name=warm"])
if os.geteuid() == 0:  # root reads anything: drop to nobody for the check itself
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    check_jobs(["data=hf", "data.path=" + sys.argv[1]])
    print("ok")
except ConfigError as e:
    print(e)
"""


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_an_unreadable_data_path_is_named(tmp_path, where):
    """A real permission denial, checked by an unprivileged process: a folder of mode 000, or a
    folder inside one (its parent cannot be entered)."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="rizzrun-unreadable-"))  # /tmp itself: others may enter
    top.chmod(0o755)
    locked, fine = top / "locked", top / "fine"
    locked.mkdir()
    fine.mkdir()
    path = locked if where == "folder" else locked / "inner"
    if where == "parent":
        path.mkdir()
    locked.chmod(0o000)
    try:
        done = subprocess.run([sys.executable, "-c", DROP_AND_CHECK, str(path), str(fine)], capture_output=True,
                              text=True, cwd=REPO, timeout=120)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(top)
    assert done.stdout == f"data.path='{path}': cannot read {path} (Permission denied)\n", done.stderr


# --- what must fit in the model's max_seq_len -----------------------------------------------------

def test_eval_window_fits_when_the_run_evaluates():
    # tiny: max_seq_len 256; the window is EOS + prefix + continuation.
    load(["eval.at_end=true", "eval.prefix_len=32", "eval.continuation_len=223"])  # 1 + 32 + 223 = 256
    assert only_error(["eval.at_end=true", "eval.prefix_len=32", "eval.continuation_len=224"]) == (
        "eval.continuation_len=224: the memorization window, EOS + eval.prefix_len=32 + 224 = 257 tokens, is longer "
        "than the model's max_seq_len=256 (from model.size=tiny); allowed: eval.prefix_len + eval.continuation_len "
        "<= 255, or raise model.max_seq_len")
    load(["eval.at_end=false", "eval.continuation_len=224"])  # not evaluated by this run


def test_sampled_prompts_fit_with_max_new_tokens():
    # The first trainer.samples_per_val=2 prompts: 'Return the' (10 bytes) and 'This function' (13);
    # the byte tokenizer gives one id per byte, and the sampler puts an EOS first: 14 + 64 = 78.
    load(["model.max_seq_len=78", "data.seq_len=64"])
    assert only_error(["model.max_seq_len=77", "data.seq_len=64"]) == (
        "decoder.max_new_tokens=64: a sample at validation, the prompt 'This function' (14 tokens with the EOS put "
        "first) + 64 new tokens = 78, is longer than the model's max_seq_len=77 (from model.max_seq_len); allowed: "
        "decoder.max_new_tokens <= 63, shorter prompts, or trainer.samples_per_val=0, or raise model.max_seq_len")
    load(["model.max_seq_len=77", "data.seq_len=64", "trainer.samples_per_val=0"])
    load(["model.max_seq_len=77", "data.seq_len=64", "trainer.samples_per_val=1"])  # 11 + 64 = 75
    # UTF-8: 'é' is two bytes, so 'héllo' is 6 ids + EOS = 7; 7 + 250 = 257 > 256.
    assert "the prompt 'héllo' (7 tokens with the EOS put first) + 250 new tokens = 257" in only_error(
        ["prompts=['héllo']", "decoder.max_new_tokens=250"])
    load(["prompts=['héllo']", "decoder.max_new_tokens=249"])


def test_prompts_of_an_untrained_tokenizer_count_as_one_token():
    # BPE is trained at run time, so a non-empty prompt counts as 1 token (a lower bound) + EOS.
    assert "the prompt 'Return the' (at least 2 tokens with the EOS put first) + 255 new tokens = 257" in only_error(
        ["tokenizer=bpe", "model.vocab_size=null", "decoder.max_new_tokens=255"])
    load(["tokenizer=bpe", "decoder.max_new_tokens=254"])


# --- the accelerator ------------------------------------------------------------------------------

@pytest.mark.parametrize("files,env,system,machine,found", [
    ([], {}, "Linux", "x86_64", None),
    (["dev/nvidiactl", "dev/nvidia-uvm"], {}, "Linux", "x86_64", None),  # driver bits, no GPU
    (["dev/nvidia0"], {}, "Linux", "x86_64", "dev/nvidia0"),
    (["proc/driver/nvidia/gpus/0000:01:00.0/information"], {}, "Linux", "x86_64", "proc/driver/nvidia/gpus"),
    (["dev/kfd"], {}, "Linux", "x86_64", "dev/kfd"),
    (["dev/nvidia0"], {"CUDA_VISIBLE_DEVICES": ""}, "Linux", "x86_64", None),
    (["dev/nvidia0"], {"CUDA_VISIBLE_DEVICES": "-1"}, "Linux", "x86_64", None),
    (["dev/nvidia0"], {"CUDA_VISIBLE_DEVICES": "0"}, "Linux", "x86_64", "dev/nvidia0"),
    ([], {}, "Darwin", "arm64", "Apple MPS (macOS on arm64)"),
    ([], {}, "Darwin", "x86_64", None),
])
def test_gpu_found_from_device_files(tmp_path, files, env, system, machine, found):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    got = devices.gpu_found(root=tmp_path, environ=env, system=system, machine=machine)
    assert got == (found if found is None or not found.startswith(("dev", "proc")) else str(tmp_path / found))


def test_trainer_gpu_without_a_gpu_is_one_line():
    torch = pytest.importorskip("torch")  # the independent answer: does torch see a GPU here?
    has_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    for argv in (["trainer=gpu"], ["trainer.accelerator=gpu"]):
        done = validate_cli(*argv)
        if has_gpu:
            assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
        else:
            assert done.returncode == 2
            assert done.stderr == ("error: trainer.accelerator=gpu: this machine has no GPU (looked for "
                                   "/proc/driver/nvidia/gpus, /dev/nvidiaN, /dev/kfd; MPS needs macOS on arm64); "
                                   "train on the CPU with trainer=cpu\n")
    load(["trainer=gpu"])  # the config alone is sound: only a command running here checks the machine
    assert validate_cli("trainer=cpu").returncode == 0


def test_hidden_gpus_are_named():
    done = validate_cli("trainer=gpu", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and done.stderr == (
        "error: trainer.accelerator=gpu: CUDA_VISIBLE_DEVICES='' hides every GPU; train on the CPU with trainer=cpu\n")


# --- a short run with the default warmup ------------------------------------------------------------

def test_a_short_run_validates_with_the_default_warmup():
    cfg = check_jobs(["+recipe=tiny", "trainer.max_steps=20"])[0]
    assert cfg.scheduler.warmup_steps is None  # adapts: min(50, 20 // 8) = 2 (tests/test_optim.py)
    assert only_error(["+recipe=tiny", "trainer.max_steps=20", "scheduler.warmup_steps=50"]) == (
        "scheduler.warmup_steps=50: longer than scheduler.total_steps=20 (from ${trainer.max_steps}); "
        "allowed: scheduler.warmup_steps <= 20")
    done = validate_cli("+recipe=tiny", "trainer.max_steps=20")
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


# --- the composition cache ------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    [],
    ["+recipe=tiny", "model.n_layer=2", "trainer.max_steps=20"],
    ["~scheduler", "optimizer.lr=0.1", "+model.extra=1", "name=x"],
    ["data=hf", "data.path=somewhere", "tokenizer=bpe", "model=llama", "scheduler=constant"],
    ["model.n_layr=2", "+name=x", "~nope", "trainer.max_steps=7"],  # keys Hydra refuses
])
def test_cached_composition_is_hydras(tmp_path, monkeypatch, overrides):
    """The group choices' config from the cache + the key overrides applied afterwards equal
    Hydra composing every override itself (a cold and a warm cache alike)."""
    import importlib

    compose = importlib.import_module("rizzrun.config.compose")
    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path))
    from omegaconf import OmegaConf

    def plain(cfg):
        return OmegaConf.to_container(cfg, resolve=False)

    for _ in ("cold", "warm"):
        cached, refused = compose._hydra_compose(overrides, "config")
        direct, direct_refused = compose._compose_with_hydra(overrides, "config")
        assert plain(cached) == plain(direct)
        assert [str(e) for e in refused] == [str(e) for e in direct_refused]
    assert len(list((tmp_path / "compose").glob("*.pkl"))) == 1


def test_a_changed_option_file_is_composed_again(tmp_path, monkeypatch):
    import shutil

    from rizzrun import paths

    conf = tmp_path / "conf"
    shutil.copytree(paths.conf_dir(), conf)
    monkeypatch.setattr(paths, "conf_dir", lambda: conf)
    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path / "cache"))
    assert load([]).optimizer.lr == 3e-3
    text = (conf / "optimizer" / "adamw.yaml").read_text()
    assert "\nlr: 3e-3\n" in text
    (conf / "optimizer" / "adamw.yaml").write_text(text.replace("\nlr: 3e-3\n", "\nlr: 1.0e-3\n"))
    assert load([]).optimizer.lr == 1e-3
    assert len(list((tmp_path / "cache" / "compose").glob("*.pkl"))) == 2


@pytest.mark.parametrize("overrides", [["hydra.job.name=x", "model.n_layer=2"], ["hydra/launcher=basic"]])
def test_overrides_that_steer_hydra_bypass_the_cache(tmp_path, monkeypatch, overrides):
    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path))
    load(overrides)
    assert not (tmp_path / "compose").exists()


def test_signatures_are_read_again_when_the_source_changes(fake_package, tmp_path, monkeypatch):
    import pickle

    from rizzrun.config import signatures

    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(signatures._DiskCache, "entries", None)
    assert [p.name for p in signatures.resolve("fakepkg.comp.Comp").params] == ["width", "seq_len", "batch_size"]
    assert (tmp_path / "cache" / "signatures.pkl").is_file()
    source = fake_package / "comp.py"
    source.write_text(source.read_text().replace("batch_size: int = 2", "batch_size: int = 2, depth=None"))
    assert [p.name for p in signatures.resolve("fakepkg.comp.Comp").params] == [
        "width", "seq_len", "batch_size", "depth"]
    monkeypatch.setattr(signatures._DiskCache, "entries", None)  # as a new process: from the file
    again = signatures.resolve("fakepkg.comp.Comp")
    assert again.params[-1].name == "depth" and again.params[-1].default is None
    assert again.params[0].annotation is not None and again.attrs == {"batch_kind": "lm"}
    assert pickle.loads(pickle.dumps(signatures.UNKNOWN)) is signatures.UNKNOWN


NO_PYDANTIC_PROBE = """
import sys
from rizzrun.cli import main
codes = []
for argv in (["validate", "model.n_layr=2"], ["validate", "-m", "seed=0,1"], ["validate", "+recipe=tiny"]):
    try:
        main(argv)
    except SystemExit as e:
        codes.append(e.code)
print("CODES", codes, "PYDANTIC", "pydantic" in sys.modules)
"""


def test_validate_goes_straight_to_the_work():
    """`rizzrun validate OVERRIDES` skips typer's argument coercion (pydantic: more time than the
    validation itself); help and unknown flags still go through typer."""
    done = subprocess.run([sys.executable, "-c", NO_PYDANTIC_PROBE], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.stdout.splitlines()[-1] == "CODES [2, 0, 0] PYDANTIC False", done.stderr
    assert done.stdout.splitlines()[:2] == ["ok (2 jobs)", "ok"]
    helped = subprocess.run([RIZZRUN, "validate", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert helped.returncode == 0 and "--multirun" in helped.stdout
    bad = subprocess.run([RIZZRUN, "validate", "--bogus"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_the_composition_cache_keeps_the_newest_entries(tmp_path, monkeypatch):
    from rizzrun.config import compose_cache

    monkeypatch.setenv("RIZZRUN_CACHE", str(tmp_path))
    monkeypatch.setattr(compose_cache, "KEEP", 2)
    for i in range(4):
        compose_cache.store(f"entry{i}", {"i": i})
        os.utime(tmp_path / "compose" / f"entry{i}.pkl", ns=(i * 10**9, i * 10**9))  # distinct ages
    compose_cache.store("entry4", {"i": 4})  # prunes to the two newest: entry3 and entry4
    assert sorted(p.name for p in (tmp_path / "compose").iterdir()) == ["entry3.pkl", "entry4.pkl"]
    assert compose_cache.load("entry3") == {"i": 3} and compose_cache.load("entry0") is None


def test_a_fresh_process_composes_a_recipe_that_names_another(tmp_path):
    """goldfish_tiny's defaults list names ce_memorize_tiny: registering only the named recipe
    must follow it. Twice: cold, then from the composition cache (where ${now:...} in
    hydra.run.dir must still resolve, as Hydra's resolvers are registered)."""
    code = ("import sys; from omegaconf import OmegaConf; from rizzrun.config import check_jobs; "
            "cfg = check_jobs(['+recipe=goldfish_tiny'])[0]; "
            "print(cfg.name, cfg.objective.k, OmegaConf.select(cfg, 'hydra.run.dir').startswith('outputs/'))")
    env = {**os.environ, "RIZZRUN_CACHE": str(tmp_path), "RIZZRUN_OUTPUTS": "outputs"}
    for _ in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=120)
        assert done.stdout.strip() == "goldfish_tiny 4 True", done.stderr
    assert len(list((tmp_path / "compose").glob("*.pkl"))) == 1


def test_a_20_step_run_trains_with_the_adapted_warmup(tmp_path, shared_cache):
    """`rizzrun +recipe=tiny trainer.max_steps=20` runs (the real command), warming up for
    min(50, 20 // 8) = 2 steps: lr/lr0 = k/2 for k <= 2, then 0.1 + 0.45 (1 + cos(pi (k - 2) / 18))."""
    import json
    import math

    run = tmp_path / "run"
    done = subprocess.run(
        [RIZZRUN, "+recipe=tiny", "trainer.max_steps=20", "logger=none", "trainer.log_every=1",
         "trainer.val_every=20", "trainer.val_batches=1", "trainer.samples_per_val=0", "trainer.checkpoint_every=20",
         "data.seq_len=32", "data.batch_size=4", "model.n_layer=1", f"cache_dir={shared_cache}",
         f"hydra.run.dir={run}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/lr"] / 3e-3 for r in rows if "train/lr" in r]

    def f(k):
        return k / 2 if k <= 2 else 0.1 + 0.45 * (1 + math.cos(math.pi * (k - 2) / 18)) if k < 20 else 0.1

    # Step k logs the lr its update used (float32: 1e-6).
    assert logged == pytest.approx([f(k) for k in range(1, 21)], abs=1e-6)


def test_a_run_with_trainer_gpu_and_no_gpu_is_refused_before_it_starts(tmp_path):
    # CUDA_VISIBLE_DEVICES='' hides every CUDA GPU (from torch too), so this holds on any Linux box.
    done = subprocess.run([RIZZRUN, "trainer=gpu", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert (done.returncode, done.stderr) == (2, "error: trainer.accelerator=gpu: CUDA_VISIBLE_DEVICES='' hides every "
                                                 "GPU; train on the CPU with trainer=cpu\n")
    assert not (tmp_path / "run").exists()


def test_a_ranged_number_must_be_finite():
    # inf passes "> 0"; the run would fail only when the component is built
    from omegaconf import OmegaConf

    from rizzrun.config.compose import compose
    from rizzrun.config.validate import problems

    cfg = compose(["decoder.temperature=inf", "decoder.top_p=nan", "optimizer.lr=inf"])
    found = problems(cfg)
    assert "decoder.temperature=inf: not a finite number; allowed: temperature > 0" in found
    assert "decoder.top_p=nan: not a finite number; allowed: top_p > 0 and <= 1" in found
    assert "optimizer.lr=inf: not a finite number; allowed: lr > 0" in found
    assert OmegaConf.is_config(cfg)
