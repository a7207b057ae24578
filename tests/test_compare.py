"""`rizzrun compare`: run folders written here by hand (2 learning rates x 3 seeds, as a Hydra
sweep lays them out), read back into a table whose numbers are checked against values computed
here with `statistics` and the t table (t_{0.975,2} = 4.302653), in every output format; the
plot's lines against the groups' means; the W&B path through a fake API object; the real
command's errors and imports; and a real tiny sweep of the runner."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rizzrun.compare import configs, runs as runs_mod
from rizzrun.compare.command import Options, compare
from rizzrun.compare.stats import incomplete_beta, mean_ci, t_quantile
from rizzrun.compare.wandb_runs import parse_filters
from rizzrun.errors import InputError

RIZZRUN = Path(sys.executable).with_name("rizzrun")
T_975_2 = 4.302653  # t_{0.975, 2} from a printed t table: three seeds per group
LRS = (0.001, 0.01)
SEEDS = (0, 1, 2)
VAL_STEPS = (2, 4, 6)
# val/loss at VAL_STEPS, per (lr, seed): the best (min) is never the final value.
VAL = {(0.001, 0): [3.0, 2.5, 2.6], (0.001, 1): [3.1, 2.7, 2.8], (0.001, 2): [3.2, 2.9, 3.0],
       (0.01, 0): [2.0, 1.5, 1.6], (0.01, 1): [2.0, 1.6, 1.7], (0.01, 2): [2.0, 1.7, 1.9]}
# val/acc: higher is better, so its best is the max.
ACC = {(0.001, s): [0.5, 0.7, 0.6] for s in SEEDS} | {(0.01, s): [0.6, 0.8 + 0.01 * s, 0.75] for s in SEEDS}


def val(lr: float, seed: int) -> list[float]:
    return VAL.get((lr, seed), [2.0, 1.8, 1.9])


def train_loss(lr: float, seed: int, step: int) -> float:
    return 4.0 - 10 * lr * step + 0.01 * seed


def write_run(folder: Path, lr: float, seed: int, job: int, steps: int = 6, status: str = "completed") -> None:
    """A run folder as the runner leaves it: config.yaml (resolved), .hydra/overrides.yaml,
    metrics.jsonl, summary.json."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"name": "tiny", "seed": seed, "output_root": f"/runs/{job}", "resume": False,
              "model": {"_target_": "rizzrun.models.llama.Llama", "d_model": 32},
              "data": {"seed": seed, "cache_dir": f"/cache/{job}", "batch_size": 4},
              "optimizer": {"lr": lr, "betas": [0.9, 0.95]}, "trainer": {"max_steps": steps},
              "logger": {"kind": "wandb", "name": f"job-{job}", "group": "sweep-1", "tags": [f"seed={seed}"]}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optimizer.lr={lr}", f"seed={seed}"]))
    rows = []
    for step in range(1, steps + 1):
        rows.append({"step": step, "train/loss": train_loss(lr, seed, step), "train/lr": lr})
        if step in VAL_STEPS:
            i = VAL_STEPS.index(step)
            rows.append({"step": step, "val/loss": val(lr, seed)[i], "val/acc": ACC.get((lr, seed), [0.5] * 3)[i]})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({"status": status, "step": steps,
                                                     "val_loss": val(lr, seed)[-1]}))


@pytest.fixture()
def sweep(tmp_path) -> Path:
    """outputs/multirun/<date>/<time>/{0..5}: jobs 0-2 lr=0.001 seeds 0-2, jobs 3-5 lr=0.01."""
    folder = tmp_path / "outputs" / "multirun" / "2026-12-01" / "10-00-00"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    for job, (lr, seed) in enumerate((lr, seed) for lr in LRS for seed in SEEDS):
        write_run(folder / str(job), lr, seed, job)
    return folder


def hand_ci(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), T_975_2 * statistics.stdev(values) / math.sqrt(len(values))


def expected(lr: float, metric: str, kind: str) -> tuple[float, float]:
    """Mean and CI half-width over the three seeds of `lr`, computed here."""
    if metric == "train/loss":
        values = [train_loss(lr, s, 6) for s in SEEDS]  # decreasing: final == best
    else:
        table = VAL if metric == "val/loss" else ACC
        pick = {"final": lambda v: v[-1], "best": min if metric == "val/loss" else max}[kind]
        values = [pick(table[lr, s]) for s in SEEDS]
    return hand_ci(values)


def table_text(*paths, **options) -> tuple[object, str]:
    out = io.StringIO()
    result, _ = compare(Options(paths=[Path(p) for p in paths], **options), file=out)
    return result, out.getvalue()


def rizzrun(*argv: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(RIZZRUN), *argv], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)


# ---- the t quantile -----------------------------------------------------------------------

def test_t_quantile_matches_the_t_table_and_closed_forms():
    table = {1: 12.706, 2: 4.303, 4: 2.776, 10: 2.228, 29: 2.045, 120: 1.980}
    for df, value in table.items():
        assert round(t_quantile(0.975, df), 3) == value, df
    assert round(t_quantile(0.995, 10), 3) == 3.169
    for p in (0.6, 0.9, 0.975, 0.999):
        # df=1 is the Cauchy distribution; df=2 has a closed form; df -> infinity is the normal
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
        assert t_quantile(p, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(p), rel=1e-6)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)


def test_incomplete_beta_against_closed_forms():
    for x in (0.0, 0.05, 0.3, 0.5, 0.77, 0.99, 1.0):
        assert incomplete_beta(x, 1, 1) == pytest.approx(x, abs=1e-14)
        assert incomplete_beta(x, 3.5, 1) == pytest.approx(x ** 3.5, abs=1e-13)
        assert incomplete_beta(x, 1, 2.5) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-13)
        assert incomplete_beta(x, 0.5, 0.5) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)


def test_mean_ci_is_t_times_s_over_root_n():
    assert mean_ci([2.6, 2.8, 3.0]) == pytest.approx((2.8, T_975_2 * 0.2 / math.sqrt(3)), rel=1e-6)
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert mean_ci(values) == pytest.approx((6.2, 2.776445 * statistics.stdev(values) / math.sqrt(5)), rel=1e-6)
    assert mean_ci([5.0]) == (5.0, None)


def test_the_package_imports_only_the_standard_library_yaml_rich_matplotlib_and_wandb():
    imported = set()
    for path in Path(runs_mod.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"scipy", "numpy", "torch", "lightning", "pandas"}
    assert imported <= {"__future__", "rizzrun", "csv", "io", "json", "math", "os", "re", "sys", "collections", "contextlib",
                        "dataclasses", "functools", "pathlib", "yaml", "rich", "matplotlib", "wandb"}


# ---- reading folders ----------------------------------------------------------------------

def test_finds_runs_in_a_run_a_sweep_and_a_folder_of_sweeps(sweep, tmp_path):
    jobs = [sweep / str(j) for j in range(6)]
    assert runs_mod.find_run_folders(sweep) == jobs
    assert runs_mod.find_run_folders(sweep.parent.parent) == jobs  # outputs/multirun/
    assert runs_mod.find_run_folders(jobs[2]) == [jobs[2]]
    for j in range(6, 12):  # job 10 after job 9
        write_run(sweep / str(j), 0.1, j, j)
    assert [p.name for p in runs_mod.find_run_folders(sweep)] == [str(j) for j in range(12)]
    runs = runs_mod.load_folders([jobs[0], sweep, jobs[1]])  # each run once
    assert [r.name for r in runs] == [str(j) for j in range(12)]
    run = runs[4]
    assert run.status == "completed" and run.step == 6
    assert run.config["optimizer.lr"] == 0.01 and run.config["optimizer.betas"] == [0.9, 0.95]
    assert run.overrides == ["optimizer.lr=0.01", "seed=1"]
    assert run.history["val/loss"] == list(zip(VAL_STEPS, VAL[0.01, 1]))
    assert run.history["train/loss"] == [(s, train_loss(0.01, 1, s)) for s in range(1, 7)]


def test_a_run_without_summary_a_cut_last_line_and_yaml_floats(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("optimizer:\n  lr: 1e-3\n  eps: 1.0e-08\nname: '1e-3'\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n'
                                         '{"step": 2, "train/loss": 1.25}\n{"step": 3, "tra')
    [run] = runs_mod.load_folders([folder])
    assert run.config == {"optimizer.lr": 0.001, "optimizer.eps": 1e-8, "name": "1e-3"}
    assert run.history == {"train/loss": [(1, 2.0), (2, 1.25)]}  # the last value of a step
    assert (run.status, run.step, run.name) == (None, 2, "run")
    (folder / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not a JSON object"):
        runs_mod.load_folders([folder])


# ---- differing keys and seed groups ----------------------------------------------------------

def test_differing_keys_ignore_folders_and_labels_and_seeds_group(sweep):
    runs = runs_mod.load_folders([sweep])
    keys = configs.differing_keys(runs)
    # output_root, data.cache_dir, logger.name, logger.tags differ in every run: never columns
    assert keys == ["optimizer.lr", "seed", "data.seed"]
    groups = configs.group_runs(runs, keys)
    assert [[r.name for r in g] for g in groups] == [["0", "1", "2"], ["3", "4", "5"]]
    write_run(sweep / "6", 0.01, 3, 6)  # a fourth seed of lr=0.01 with another model width
    text = (sweep / "6" / "config.yaml").read_text().replace("d_model: 32", "d_model: 64")
    (sweep / "6" / "config.yaml").write_text(text)
    runs = runs_mod.load_folders([sweep])
    keys = configs.differing_keys(runs)
    assert keys == ["optimizer.lr", "seed", "data.seed", "model.d_model"]
    assert [[r.name for r in g] for g in configs.group_runs(runs, keys)] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


# ---- the table in each format ------------------------------------------------------------------

def markdown_rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in [lines[0], *lines[2:]]]


def shown(mean: float, ci: float) -> str:
    return f"{mean:.4f} ± {ci:.4f}"


def test_markdown_table_groups_seeds_as_mean_and_ci(sweep):
    _, text = table_text(sweep, metrics=["val/loss", "train/loss", "val/acc"], fmt="markdown")
    header, *rows = markdown_rows(text)
    assert header == ["run", "n", "optimizer.lr", "status", "step", "val/loss final", "val/loss best",
                      "train/loss final", "train/loss best", "val/acc final", "val/acc best"]
    assert [r[:5] for r in rows] == [["0,1,2", "3", "0.001", "completed", "6"], ["3,4,5", "3", "0.01", "completed", "6"]]
    for row, lr in zip(rows, LRS):
        cells = dict(zip(header, row))
        for metric in ("val/loss", "train/loss", "val/acc"):
            for kind in ("final", "best"):
                assert cells[f"{metric} {kind}"] == shown(*expected(lr, metric, kind)), (lr, metric, kind)
    # the numbers themselves, written out once: lr=0.001 val/loss final 2.6, 2.8, 3.0
    assert rows[0][5] == "2.8000 ± 0.4968" and rows[0][6] == "2.7000 ± 0.4968"


def test_default_metrics_and_format_when_piped(sweep):
    result = rizzrun("compare", str(sweep), cwd=sweep)
    assert result.returncode == 0, result.stderr
    header, *rows = markdown_rows(result.stdout)
    assert header[-4:] == ["val/loss final", "val/loss best", "train/loss final", "train/loss best"]
    assert len(rows) == 2


def test_csv_parsed_back_per_group_and_per_run(sweep):
    _, text = table_text(sweep, metrics=["val/loss", "val/acc"], fmt="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["run"], r["n"], r["optimizer.lr"]) for r in rows] == [("0,1,2", "3", "0.001"), ("3,4,5", "3", "0.01")]
    for row, lr in zip(rows, LRS):
        for metric in ("val/loss", "val/acc"):
            assert row[f"{metric} runs"] == "3"
            for kind in ("final", "best"):
                mean, ci = expected(lr, metric, kind)
                assert float(row[f"{metric} {kind}"]) == pytest.approx(mean, abs=1e-12)
                assert float(row[f"{metric} {kind} ci95"]) == pytest.approx(ci, rel=1e-6)
    _, text = table_text(sweep, metrics=["val/loss"], fmt="csv", per_run=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:7] == ["run", "n", "optimizer.lr", "seed", "data.seed", "status", "step"]
    assert [(r["run"], r["seed"], float(r["val/loss final"]), float(r["val/loss best"]), r["val/loss final ci95"])
            for r in rows] == [(str(j), str(s), VAL[lr, s][-1], min(VAL[lr, s]), "")
                               for j, (lr, s) in enumerate((lr, s) for lr in LRS for s in SEEDS)]


def test_rich_table(sweep, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _, text = table_text(sweep, fmt="rich")
    lines = text.splitlines()
    assert "┃ run" in lines[1] and "optimizer.lr" in lines[1] and "val/loss final" in lines[1]
    assert "0,1,2" in lines[3] and shown(*expected(0.001, "val/loss", "final")) in lines[3]
    assert "3,4,5" in lines[4] and shown(*expected(0.01, "val/loss", "best")) in lines[4]


def test_sort_maximize_and_status_of_a_mixed_group(sweep):
    result, _ = table_text(sweep, metrics=["val/loss"], sort="val/acc", fmt="csv")
    assert [r.label for r in result.rows] == ["3,4,5", "0,1,2"]  # higher accuracy first
    assert result.metrics == ["val/loss", "val/acc"]  # the sort metric is shown
    result, _ = table_text(sweep, metrics=["train/loss"], maximize=("train/loss",), fmt="csv")
    cell = result.rows[0].cells["train/loss", "best"]
    assert cell.mean == pytest.approx(statistics.mean(train_loss(0.001, s, 1) for s in SEEDS))
    summary = sweep / "2" / "summary.json"
    summary.write_text(json.dumps({"status": "crashed", "step": 4}))
    result, _ = table_text(sweep, fmt="csv")
    assert (result.rows[0].status, result.rows[0].step) == ("2 completed, 1 crashed", "4–6")


# ---- errors, imports -----------------------------------------------------------------------------

def test_bad_paths_and_options_are_one_line_and_exit_2(sweep, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = {
        (str(tmp_path / "nope"),): f"error: {tmp_path / 'nope'}: no such folder; give a run folder, a sweep folder "
                                   "or a folder of runs\n",
        (str(sweep), str(tmp_path / "file.txt")): f"error: {tmp_path / 'file.txt'}: not a folder; give a run folder, "
                                                  "a sweep folder or a folder of runs\n",
        (str(tmp_path / "empty"),): f"error: {tmp_path / 'empty'}: holds no run (no metrics.jsonl or config.yaml "
                                    "in it or below it); give a run folder, a sweep folder or a folder of runs\n",
        (str(sweep), "--metric", "val/los"): "error: --metric val/los: no run logged it; logged metrics: train/loss, "
                                             "train/lr, val/acc, val/loss\n",
        (str(sweep), "--format", "html"): "error: --format html: not a format; allowed: rich, markdown, csv\n",
        (str(sweep), "--plot", "val/loss"): "error: --plot METRIC and --out FILE.png go together: give both to "
                                            "write a plot\n",
        (str(sweep), "--plot", "val/loss", "--out", "x.jpg"): "error: --out x.jpg: the plot is a PNG; give a file "
                                                              "name ending in .png\n",
        (): "error: give run folders (PATH...) or --wandb ENTITY/PROJECT, not both or neither\n",
        ("--wandb", "team"): "error: --wandb team: not ENTITY/PROJECT; e.g. --wandb my-team/rizzrun\n",
    }
    for argv, message in cases.items():
        result = rizzrun("compare", *argv, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", message), argv


def test_compare_imports_no_torch_wandb_or_scipy(sweep, tmp_path):
    code = ("import sys\nfrom rizzrun.cli import main\n"
            f"try:\n    main(['compare', {str(sweep)!r}, '--plot', 'val/loss', '--out', {str(tmp_path / 'p.png')!r}])\n"
            "finally:\n    print(sorted(m for m in ('torch', 'lightning', 'wandb', 'scipy', 'pandas') if m in sys.modules),"
            " file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[]"
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the plot ------------------------------------------------------------------------------------

def test_plot_draws_each_groups_mean_and_band(sweep, tmp_path):
    out = tmp_path / "val.png"
    _, figure = compare(Options(paths=[sweep], plot="val/loss", out=out, fmt="csv"), file=io.StringIO())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.lines] == ["optimizer.lr=0.001 (n=3)", "optimizer.lr=0.01 (n=3)"]
    for line, band, lr in zip(axes.lines, axes.collections, LRS):
        assert list(line.get_xdata()) == list(VAL_STEPS)
        means = [statistics.mean(VAL[lr, s][i] for s in SEEDS) for i in range(3)]
        halves = [hand_ci([VAL[lr, s][i] for s in SEEDS])[1] for i in range(3)]
        assert list(line.get_ydata()) == pytest.approx(means, abs=1e-12)
        ys = band.get_paths()[0].vertices[:, 1]
        assert min(ys) == pytest.approx(min(m - h for m, h in zip(means, halves)), rel=1e-6)
        assert max(ys) == pytest.approx(max(m + h for m, h in zip(means, halves)), rel=1e-6)
    # per run: six plain lines, no bands
    _, figure = compare(Options(paths=[sweep], plot="train/loss", out=out, per_run=True, fmt="csv"), file=io.StringIO())
    assert len(figure.axes[0].lines) == 6 and not figure.axes[0].collections
    assert list(figure.axes[0].lines[4].get_ydata()) == [train_loss(0.01, 1, s) for s in range(1, 7)]


def test_plot_of_a_group_whose_runs_share_no_step(tmp_path):
    for seed, steps in ((0, 2), (1, 3)):
        write_run(tmp_path / f"r{seed}", 0.01, seed, seed, steps=steps)
    rows = [{"step": s, "x": float(seed + s)} for seed in (0,) for s in (1, 3)]
    (tmp_path / "r0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "r1" / "metrics.jsonl").write_text(json.dumps({"step": 2, "x": 7.0}) + "\n")
    _, figure = compare(Options(paths=[tmp_path], plot="x", out=tmp_path / "x.png", fmt="csv"), file=io.StringIO())
    lines = figure.axes[0].lines
    assert [(list(l.get_xdata()), list(l.get_ydata())) for l in lines] == [([1, 3], [1.0, 3.0]), ([2], [7.0])]


# ---- W&B ------------------------------------------------------------------------------------------

class FakeRun:
    """What the W&B public API's Run offers compare: id, name, state, config, summary,
    scan_history(keys) (only rows holding every key, as W&B returns them)."""

    def __init__(self, folder: Path, job: int):
        self.id, self.name, self.state = f"id{job}", f"job-{job}", "finished"
        self.config = {**yaml.safe_load((folder / "config.yaml").read_text()), "_wandb": {"cli_version": "0.19"}}
        self.summary = {"trainer/global_step": 6, "_step": 99}
        self.rows = []
        for n, row in enumerate(runs_mod._read_jsonl(folder / "metrics.jsonl")):
            step = row.pop("step")
            self.rows.append({**row, "trainer/global_step": step, "_step": n})
        self.asked = []

    def scan_history(self, keys=None, page_size=1000):
        self.asked.append(list(keys))
        return iter([{k: row[k] for k in keys} for row in self.rows if all(k in row for k in keys)])


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None, **kwargs):
        self.calls.append((path, filters))
        return list(self._runs)


def test_wandb_runs_give_the_same_table_as_their_folders(sweep):
    api = FakeApi([FakeRun(sweep / str(j), j) for j in range(6)])
    out = io.StringIO()
    result, _ = compare(Options(wandb="team/rizzrun", filters=["state=finished", "config.optimizer.lr=0.01"],
                                group="sweep-1", metrics=["val/loss", "val/acc"], fmt="csv"), file=out, api=api)
    assert api.calls == [("team/rizzrun", {"state": "finished", "config.optimizer.lr": 0.01, "group": "sweep-1"})]
    assert api._runs[0].asked == [["val/loss", "trainer/global_step"], ["val/acc", "trainer/global_step"]]
    from_wandb = list(csv.DictReader(io.StringIO(out.getvalue())))
    _, text = table_text(sweep, metrics=["val/loss", "val/acc"], fmt="csv")
    from_folders = list(csv.DictReader(io.StringIO(text)))
    assert [r["run"] for r in from_wandb] == ["job-0,job-1,job-2", "job-3,job-4,job-5"]
    assert [r["status"] for r in from_wandb] == ["finished", "finished"]
    drop = ("run", "status")
    assert [{k: v for k, v in r.items() if k not in drop} for r in from_wandb] == \
           [{k: v for k, v in r.items() if k not in drop} for r in from_folders]
    assert result.rows[0].runs[0].source == "team/rizzrun/id0"
    assert "_wandb.cli_version" not in result.rows[0].runs[0].config


def test_wandb_step_falls_back_to_wandbs_own(sweep):
    run = FakeRun(sweep / "0", 0)
    for row in run.rows:
        row.pop("trainer/global_step")
    run.summary = {}
    result, _ = compare(Options(wandb="team/p", metrics=["val/loss"], fmt="csv", plot=None), file=io.StringIO(),
                        api=FakeApi([run]))
    [only] = result.rows[0].runs
    assert [s for s, _ in only.history["val/loss"]] == [2, 5, 8]  # the rows' _step: their line numbers
    assert only.step == 8


def test_wandb_errors_are_one_line(sweep):
    class Offline:
        def runs(self, path, filters=None):
            raise ConnectionError("Max retries exceeded with url: /graphql\nmore")

    with pytest.raises(InputError) as e:
        compare(Options(wandb="team/p"), file=io.StringIO(), api=Offline())
    assert str(e.value) == ("--wandb team/p: cannot read the runs from W&B (ConnectionError: Max retries exceeded "
                            "with url: /graphql); check the name, `wandb login` and the network, or compare run "
                            "folders instead")
    broken = FakeRun(sweep / "0", 0)
    broken.scan_history = lambda keys=None: (_ for _ in ()).throw(TimeoutError("read timed out"))
    with pytest.raises(InputError, match=r"^--wandb team/p: cannot read the runs from W&B \(TimeoutError: read timed "):
        compare(Options(wandb="team/p"), file=io.StringIO(), api=FakeApi([broken]))
    with pytest.raises(InputError, match=r"^--wandb team/p: no run matches the filters \{\"group\": \"g\"\}"):
        compare(Options(wandb="team/p", group="g"), file=io.StringIO(), api=FakeApi([]))
    assert parse_filters(['{"$or": [{"state": "finished"}, {"state": "crashed"}]}', "tags=seed=1"], None) == \
        {"$or": [{"state": "finished"}, {"state": "crashed"}], "tags": "seed=1"}
    with pytest.raises(InputError, match="^--filter state: not KEY=VALUE"):
        parse_filters(["state"], None)
    with pytest.raises(InputError, match="^--filter/--group select W&B runs"):
        compare(Options(paths=[sweep], group="g"), file=io.StringIO())


# ---- a real sweep of the runner -----------------------------------------------------------------

TINY = ["+recipe=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1",
        "model.d_ff=64", "data.seq_len=32", "data.batch_size=4", "trainer.max_steps=2", "trainer.val_every=1",
        "trainer.log_every=1", "trainer.val_batches=1", "trainer.samples_per_val=0", "scheduler.warmup_steps=1",
        "data.max_docs=300", "logger=csv"]


def test_a_real_tiny_sweep_of_two_seeds(tmp_path, shared_cache):
    from rizzrun.runner.metrics import read_metrics

    sweep = tmp_path / "sweep"
    result = rizzrun("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                     RIZZRUN_OUTPUTS=str(tmp_path / "outputs"))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_mod.load_folders([sweep])
    assert [r.name for r in runs] == ["0", "1"]
    summaries = [json.loads((sweep / j / "summary.json").read_text()) for j in "01"]
    for run, summary, job in zip(runs, summaries, "01"):
        rows = read_metrics(sweep / job / "metrics.jsonl")
        assert run.history["train/loss"] == [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        assert (run.status, run.step) == ("completed", 2)
        assert run.history["val/loss"][-1] == (2, summary["val_loss"])
    # seed, data.seed (${seed}) and the folders differ; nothing else does: one group of two
    assert configs.differing_keys(runs) == ["seed", "data.seed"]
    result = rizzrun("compare", str(sweep), "--format", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    finals = [s["val_loss"] for s in summaries]
    assert (row["run"], row["n"], row["status"], row["step"]) == ("0,1", "2", "completed", "2")
    assert float(row["val/loss final"]) == pytest.approx(statistics.mean(finals), abs=1e-12)
    assert float(row["val/loss final ci95"]) == pytest.approx(12.706205 * statistics.stdev(finals) / math.sqrt(2),
                                                              rel=1e-6)
