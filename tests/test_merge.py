"""`rizzrun merge` and its weight arithmetic (rizzrun.merge): WARP's SLERP of task vectors and LITI
(arXiv:2406.16768), linear merging, ParamΔ (arXiv:2504.21023). The arithmetic is checked against
the specs' hand-derived numbers and a second formulation (float64 numpy, arccos); the command end
to end on real run folders (one tiny run, and clones of it with perturbed weights written by the
runner's own checkpoint writer)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rizzrun import layout
from rizzrun.errors import InputError
from rizzrun.merge import linear, liti, paramdelta, slerp, slerp_coefficients, slerp_many, task_vector
from rizzrun.merge.command import merge

pytestmark = pytest.mark.usefixtures("one_thread")

RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
REPO = Path(__file__).resolve().parents[1]


def sd(**tensors) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32) if not isinstance(v, torch.Tensor) else v
            for k, v in tensors.items()}


def np_slerp(init, t1, t2, lam):
    """The spec's formula in float64 numpy, Ω by arccos (a second formulation)."""
    d1, d2 = np.asarray(t1, np.float64) - init, np.asarray(t2, np.float64) - init
    omega = math.acos(float(np.dot(d1.ravel(), d2.ravel()) / (np.linalg.norm(d1) * np.linalg.norm(d2))))
    return init + math.sin((1 - lam) * omega) / math.sin(omega) * d1 + math.sin(lam * omega) / math.sin(omega) * d2


# --- SLERP (WARP stage 2) ---------------------------------------------------------------------------

def test_spec_example_orthogonal_unit_vectors():
    init = sd(w=[0.0, 0.0])
    out = slerp(init, sd(w=[1.0, 0.0]), sd(w=[0.0, 1.0]))["w"]
    assert torch.allclose(out, torch.tensor([0.70710678, 0.70710678]), atol=1e-6)
    assert math.isclose(float(out.norm()), 1.0, abs_tol=1e-6)
    lin = linear(init, [sd(w=[1.0, 0.0]), sd(w=[0.0, 1.0])])["w"]
    assert torch.allclose(lin, torch.tensor([0.5, 0.5])) and math.isclose(float(lin.norm()), 0.70710678, abs_tol=1e-6)


def test_spec_example_sixty_degrees():
    c1, c2 = slerp_coefficients(torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2]), 0.5)
    assert math.isclose(c1, 0.57735, abs_tol=1e-5) and math.isclose(c2, 0.57735, abs_tol=1e-5)
    out = slerp(sd(w=[0.0, 0.0]), sd(w=[1.0, 0.0]), sd(w=[0.5, math.sqrt(3) / 2]))["w"]
    assert torch.allclose(out, torch.tensor([0.8660254, 0.5]), atol=1e-6)


def test_slerp_keeps_the_norm_of_orthogonal_task_vectors_and_linear_shrinks_it():
    g = torch.Generator().manual_seed(0)
    init = torch.randn(32, 16, generator=g)
    a, b = torch.randn(2, 32 * 16, generator=g, dtype=torch.float64)
    b = b - (a @ b) / (a @ a) * a  # orthogonal to a
    b = b * a.norm() / b.norm()  # same norm
    d1, d2 = a.view(32, 16).float(), b.view(32, 16).float()
    out = slerp(sd(w=init), sd(w=init + d1), sd(w=init + d2))["w"]
    lin = linear(sd(w=init), [sd(w=init + d1), sd(w=init + d2)])["w"]
    assert math.isclose(float((out - init).norm()), float(d1.norm()), rel_tol=1e-5)
    assert math.isclose(float((lin - init).norm()), float(d1.norm()) / math.sqrt(2), rel_tol=1e-5)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.9])
def test_slerp_matches_the_arccos_formulation_on_random_tensors(lam):
    g = torch.Generator().manual_seed(1)
    init, t1, t2 = (torch.randn(8, 6, generator=g) for _ in range(3))
    out = slerp(sd(w=init), sd(w=t1), sd(w=t2), lam)["w"]
    want = np_slerp(init.double().numpy(), t1.numpy(), t2.numpy(), lam)
    assert np.allclose(out.numpy(), want, atol=1e-5)


def test_slerp_is_layer_wise_one_angle_per_tensor():
    init = sd(a=[0.0, 0.0], b=[0.0, 0.0])
    # tensor a: orthogonal deltas; tensor b: parallel ones. A whole-model angle would mix them.
    out = slerp(init, sd(a=[1.0, 0.0], b=[1.0, 0.0]), sd(a=[0.0, 1.0], b=[3.0, 0.0]))
    assert torch.allclose(out["a"], torch.tensor([0.70710678, 0.70710678]), atol=1e-6)
    assert torch.allclose(out["b"], torch.tensor([2.0, 0.0]))


def test_lambda_zero_and_one_give_the_two_models():
    g = torch.Generator().manual_seed(2)
    init, t1, t2 = (torch.randn(5, 4, generator=g) for _ in range(3))
    assert torch.allclose(slerp(sd(w=init), sd(w=t1), sd(w=t2), 0.0)["w"], t1, atol=1e-6)
    assert torch.allclose(slerp(sd(w=init), sd(w=t1), sd(w=t2), 1.0)["w"], t2, atol=1e-6)


def test_parallel_and_nearly_parallel_task_vectors_interpolate_linearly():
    init = torch.tensor([1.0, -2.0, 0.5])
    d = torch.tensor([0.3, 0.1, -0.2])
    out = slerp(sd(w=init), sd(w=init + d), sd(w=init + 2 * d), 0.5)["w"]
    assert torch.allclose(out, init + 1.5 * d, atol=1e-6)
    # 1e-6 rad apart: below the guard; arccos of a float32 cosine could not even tell it from 0
    e = torch.tensor([1.0, 1e-6])
    c1, c2 = slerp_coefficients(torch.tensor([1.0, 0.0]), e, 0.25)
    assert (c1, c2) == (0.75, 0.25)
    # 1e-3 rad apart: above the guard, SLERP proper, still finite and near the linear coefficients
    c1, c2 = slerp_coefficients(torch.tensor([1.0, 0.0]), torch.tensor([math.cos(1e-3), math.sin(1e-3)]), 0.25)
    s = math.sin(1e-3)
    assert math.isclose(c1, math.sin(0.75e-3) / s, rel_tol=1e-4)
    assert math.isclose(c2, math.sin(0.25e-3) / s, rel_tol=1e-4)


def test_a_zero_task_vector_tensor_takes_the_other_ones_linear_path():
    init = sd(w=[1.0, 1.0], frozen=[2.0, 2.0])
    t1 = sd(w=[2.0, 1.0], frozen=[2.0, 2.0])  # this run did not train `frozen`
    t2 = sd(w=[1.0, 2.0], frozen=[2.0, 4.0])
    out = slerp(init, t1, t2, 0.25)
    assert torch.allclose(out["frozen"], torch.tensor([2.0, 2.5]))  # init + λ δ2
    assert torch.equal(slerp(init, t1, sd(w=[1.0, 2.0], frozen=[2.0, 2.0]))["frozen"], init["frozen"])


def test_opposite_task_vectors_warn_and_stay_finite():
    init = sd(w=[0.0, 0.0])
    with pytest.warns(RuntimeWarning, match="w: the two task vectors are nearly opposite"):
        out = slerp(init, sd(w=[1.0, 0.0]), sd(w=[-1.0, 0.0]))["w"]
    assert torch.isfinite(out).all() and torch.allclose(out, torch.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slerp(init, sd(w=[1.0, 0.0]), sd(w=[-1.0, 0.1]))  # 174°: no warning


def test_slerp_many_is_iterative_with_lambda_one_over_m():
    init = sd(w=torch.zeros(3))
    e = torch.eye(3)
    two = slerp_many(init, [sd(w=e[0]), sd(w=e[1])])["w"]
    assert torch.allclose(two, slerp(init, sd(w=e[0]), sd(w=e[1]), 0.5)["w"])
    # θ(2) = 0.7071 (e1 + e2); θ(3) = slerp(θ(2), e3, 1/3), Ω = 90°: sin 60° θ(2) + sin 30° e3
    three = slerp_many(init, [sd(w=e[0]), sd(w=e[1]), sd(w=e[2])])["w"]
    assert torch.allclose(three, torch.tensor([0.8660254 * 0.70710678, 0.8660254 * 0.70710678, 0.5]), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        slerp_many(init, [sd(w=e[0])])


# --- LITI, linear, task vectors -----------------------------------------------------------------------

def test_liti_eta_zero_one_and_between():
    g = torch.Generator().manual_seed(3)
    init, merged = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    assert torch.equal(liti(sd(w=init), sd(w=merged), 0.0)["w"], init)
    assert torch.equal(liti(sd(w=init), sd(w=merged), 1.0)["w"], merged)
    assert torch.allclose(liti(sd(w=init), sd(w=merged), 0.3)["w"], init + 0.3 * (merged - init), atol=1e-6)
    with pytest.raises(ValueError, match=r"eta=1.5: out of range; allowed: 0 <= eta <= 1"):
        liti(sd(w=init), sd(w=merged), 1.5)


def test_linear_weights_and_task_vector():
    init = sd(w=[1.0, 1.0])
    models = [sd(w=[2.0, 1.0]), sd(w=[1.0, 3.0])]
    assert torch.allclose(linear(init, models, [0.5, 2.0])["w"], torch.tensor([1.5, 5.0]))
    assert torch.allclose(task_vector(models[1], init)["w"], torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="weights: 1 given for 2 models"):
        linear(init, models, [1.0])


# --- ParamΔ -------------------------------------------------------------------------------------------

def _three(dtype=torch.float32, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(6, 5, generator=g).to(dtype), "n": torch.randn(5, generator=g).to(dtype)}
            for _ in range(3)]


def test_paramdelta_identities():
    post, base, new_base = _three(torch.bfloat16)
    # Θ'_base = Θ_base gives Θ_post exactly (bf16 differences are exact in float32)
    out = paramdelta(base, [(post, base, 1.0)])
    assert all(torch.equal(out[k], post[k]) for k in post)
    post32, base32, nb32 = _three(torch.float32)
    assert all(torch.allclose(paramdelta(base32, [(post32, base32, 1.0)])[k], post32[k], rtol=0, atol=1e-6)
               for k in post32)
    # Θ_post = Θ_base gives Θ'_base; α = 0 gives Θ'_base
    assert all(torch.equal(paramdelta(nb32, [(base32, base32, 1.0)])[k], nb32[k]) for k in nb32)
    assert all(torch.equal(paramdelta(nb32, [(post32, base32, 0.0)])[k], nb32[k]) for k in nb32)
    one = paramdelta(nb32, [(post32, base32, 1.0)])
    assert torch.allclose(one["w"], nb32["w"] + post32["w"] - base32["w"], atol=1e-6)


def test_paramdelta_mixture_of_deltas():
    nb = sd(w=[1.0, 1.0])
    pairs = [(sd(w=[3.0, 1.0]), sd(w=[1.0, 1.0]), 0.5), (sd(w=[0.0, 4.0]), sd(w=[0.0, 1.0]), 2.0)]
    assert torch.allclose(paramdelta(nb, pairs)["w"], torch.tensor([2.0, 7.0]))


# --- what every function shares ---------------------------------------------------------------------------

def test_dtypes_are_kept_and_integer_buffers_copied_from_the_reference():
    post, base, nb = _three(torch.bfloat16)
    for s, v in zip((post, base, nb), (7, 8, 9)):
        s["count"] = torch.tensor([v], dtype=torch.int64)
    out = paramdelta(nb, [(post, base, 1.0)])
    assert out["w"].dtype == torch.bfloat16 and out["count"].dtype == torch.int64 and int(out["count"]) == 9
    # computed in float32 and cast once: equal to the float32 result rounded to bf16
    want = (nb["w"].float() + (post["w"].float() - base["w"].float())).bfloat16()
    assert torch.equal(out["w"], want)
    merged = slerp(nb, post, base)
    assert merged["n"].dtype == torch.bfloat16 and int(merged["count"]) == 9
    assert all(v.dtype == torch.bfloat16 for k, v in liti(nb, post, 0.3).items() if k != "count")


def test_tied_tensors_stay_tied():
    g = torch.Generator().manual_seed(5)

    def tied():
        w = torch.randn(4, 3, generator=g)
        return {"embed.weight": w, "norm": torch.randn(3, generator=g), "lm_head.weight": w}

    out = slerp(tied(), tied(), tied())
    assert out["lm_head.weight"] is out["embed.weight"]


def test_mismatches_are_named():
    a = sd(x=[1.0, 2.0], y=[[1.0]])
    with pytest.raises(ValueError, match=r"tensor x: shape \(2\) in init vs \(3\) in theta_2"):
        slerp(a, a, sd(x=[1.0, 2.0, 3.0], y=[[1.0]]))
    with pytest.raises(ValueError, match="theta_1 lacks tensor y"):
        slerp(a, sd(x=[1.0, 2.0]), a)
    with pytest.raises(ValueError, match="post\\[0\\] has tensor z, which new_base lacks"):
        paramdelta(a, [({**a, "z": torch.zeros(1)}, a, 1.0)])
    grown = {"embed.weight": torch.zeros(5, 3)}
    with pytest.raises(ValueError, match="tensor embed.weight: 4 rows in new_base vs 5 in post\\[0\\]: a different "
                                         "vocabulary"):
        paramdelta({"embed.weight": torch.zeros(4, 3)}, [(grown, {"embed.weight": torch.zeros(4, 3)}, 1.0)])
    with pytest.raises(ValueError, match="lam=2: out of range"):
        slerp(a, a, a, 2.0)


# --- the command, on run folders ----------------------------------------------------------------------------

MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
         "model.max_seq_len=64", "tokenizer=byte", "logger=none"]
RUN = ["data=arithmetic_sft", "data.n_train=16", "data.n_val=4", "data.batch_size=4", "trainer.max_steps=1",
       "trainer.val_every=1", "trainer.val_batches=1", "trainer.samples_per_val=0", "trainer.checkpoint_every=1",
       "eval.max_documents=2", "eval.prefix_len=4", "eval.continuation_len=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_cache):
    """One tiny 1-step run (the init) and three clones whose checkpoints hold perturbed weights,
    written by the runner's checkpoint writer (so they verify like any run's)."""
    from rizzrun.config import compose
    from rizzrun.runner.train import run

    root = tmp_path_factory.mktemp("merge")
    init = root / "init"
    assert run(compose([*MODEL, *RUN, f"cache_dir={shared_cache}"]), init)["status"] == "completed"
    out = {"init": init}
    for i, name in enumerate(("a", "b", "c")):
        out[name] = clone(init, root / name, seed=10 + i)
    return out


def state_of(run_dir: Path) -> dict[str, torch.Tensor]:
    from rizzrun.runner.checkpoint import load_weights
    from rizzrun.runner.checkpoint_files import checked_checkpoint

    return load_weights(checked_checkpoint(run_dir) / layout.WEIGHTS)


def clone(src: Path, dst: Path, seed: int, scale: float = 0.05) -> Path:
    from rizzrun.runner.checkpoint import FolderCheckpointIO

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(layout.CHECKPOINTS, layout.LOCK))
    g = torch.Generator().manual_seed(seed)
    weights = state_of(src)
    tied = weights["lm_head.weight"].data_ptr() == weights["embed.weight"].data_ptr()
    new = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in weights.items() if k != "lm_head.weight"}
    new["lm_head.weight"] = new["embed.weight"] if tied else weights["lm_head.weight"] + 0.05
    FolderCheckpointIO().save_checkpoint({"state_dict": {"model." + k: v for k, v in new.items()}, "global_step": 1},
                                         layout.checkpoints_dir(dst) / layout.step_dir_name(1))
    return dst


def logits_via_from_pretrained(out: Path, shared_cache, ids: torch.Tensor) -> torch.Tensor:
    """The model a new run builds with `model.from_pretrained=OUT`, on `ids`."""
    from rizzrun.config import compose
    from rizzrun.runner.build import build_model
    from rizzrun.tokenizers import load_tokenizer

    cfg = compose([*MODEL, *RUN, f"cache_dir={shared_cache}", f"model.from_pretrained={out}"])
    model = build_model(cfg, load_tokenizer(out / layout.TOKENIZER)).eval()
    with torch.no_grad():
        return model(ids)


def reference_logits(cfg_dir: Path, state: dict, ids: torch.Tensor) -> torch.Tensor:
    """An independent model: the run's Llama with `state` loaded."""
    from rizzrun.runner.generate import load_run

    _, _, model = load_run(cfg_dir)
    model.load_state_dict(state)
    with torch.no_grad():
        return model(ids)


IDS = torch.tensor([[257, 49, 50, 43, 51, 52, 61]])


def test_cli_slerp_end_to_end_loads_with_from_pretrained(runs, tmp_path, shared_cache, capsys):
    out = tmp_path / "warp"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([RIZZRUN, "merge", "slerp", "--init", str(runs["init"]), str(runs["a"]), str(runs["b"]),
                           "--lam", "0.4", "--eta", "0.3", str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"merged (slerp) -> {out}" in done.stdout
    init, a, b = (state_of(runs[k]) for k in ("init", "a", "b"))
    want = liti(init, slerp(init, a, b, 0.4), 0.3)
    got = state_of(out)
    assert all(torch.equal(got[k], want[k]) for k in want)
    logits = logits_via_from_pretrained(out, shared_cache, IDS)
    assert torch.allclose(logits, reference_logits(runs["init"], want, IDS), atol=1e-6)
    assert not torch.allclose(logits, reference_logits(runs["init"], init, IDS), atol=1e-3)
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "slerp" and record["options"] == {"lam": 0.4, "eta": 0.3}
    assert [i["role"] for i in record["inputs"]] == ["init", "model", "model"]
    from rizzrun.runner.extra_models import weights_digest
    from rizzrun.runner.generate import load_run

    assert record["inputs"][1]["sha256"] == weights_digest(load_run(runs["a"])[2])
    assert record["sha256"] == weights_digest(load_run(out)[2])
    assert record["inputs"][1]["path"] == str(runs["a"].absolute())
    # the command refuses the folder now that it is there (--force replaces an earlier merge: below)
    assert cli_error(["merge", "linear", "--init", str(runs["init"]), str(runs["a"]), str(out)], capsys) == (
        f"error: OUT {out}: exists and is not empty; give a new folder, or pass --force to replace an earlier merge's "
        "output")
    assert cli_error(["merge", "liti", "--init", str(runs["init"]), str(runs["a"]), "--eta", "1.5",
                      str(tmp_path / "x")], capsys) == "error: --eta 1.5: out of range; allowed: 0 <= eta <= 1"
    assert cli_error(["merge", "slerp", "--init", str(runs["init"]), str(runs["a"]), str(runs["b"])], capsys) == (
        "error: MODEL: `merge slerp` needs at least 2 models besides --init and OUT, 1 given; usage: rizzrun merge "
        "slerp --init I MODEL1 MODEL2 OUT")
    assert cli_error(["merge", "linear", "--init", str(runs["init"]), str(runs["a"]), "--weights", "1,x",
                      str(tmp_path / "x")], capsys).startswith("error: --weights 1,x: 'x' is not a number")
    assert not (tmp_path / "x").exists()


def cli_error(argv: list[str], capsys) -> str:
    """The one stderr line of `rizzrun ARGV` run in this process, which must exit 2."""
    from rizzrun.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    return err


def test_generate_and_eval_accept_the_merged_run(runs, tmp_path):
    from rizzrun.runner.evaluate import evaluate_run
    from rizzrun.runner.generate import generate_from_run

    out = tmp_path / "avg"
    merge("linear", out, init=runs["init"], models=[runs["a"], runs["b"], runs["c"]], weights="0.2,0.3,0.5")
    init, a, b, c = (state_of(runs[k]) for k in ("init", "a", "b", "c"))
    want = linear(init, [a, b, c], [0.2, 0.3, 0.5])
    assert all(torch.equal(state_of(out)[k], want[k]) for k in want)
    text = generate_from_run(out, "12+3=", max_new_tokens=3)
    assert text.startswith("12+3=")
    result = evaluate_run(out, max_documents=2)
    assert "val" in result and (out / layout.EVAL).is_file()


def test_paramdelta_and_slerp_of_three_on_runs(runs, tmp_path):
    init, a, b, c = (state_of(runs[k]) for k in ("init", "a", "b", "c"))
    out = tmp_path / "pd"
    merge("paramdelta", out, new_base=runs["a"], posts=[runs["b"], runs["c"]], bases=[runs["init"], runs["a"]],
          alphas=[1.0, 0.5])
    want = paramdelta(a, [(b, init, 1.0), (c, a, 0.5)])
    assert all(torch.equal(state_of(out)[k], want[k]) for k in want)
    # identity through the whole command: new_base = base gives post's weights
    same = tmp_path / "same"
    merge("paramdelta", same, new_base=runs["init"], posts=[runs["init"]], bases=[runs["init"]])
    assert all(torch.equal(state_of(same)[k], init[k]) for k in init)
    three = tmp_path / "three"
    lines = merge("slerp", three, init=runs["init"], models=[runs["a"], runs["b"], runs["c"]])
    assert any("lam" in line and "1/m" in line for line in lines)
    want = slerp_many(init, [a, b, c])
    assert all(torch.equal(state_of(three)[k], want[k]) for k in want)


def test_force_replaces_only_an_earlier_merge(runs, tmp_path):
    out = tmp_path / "m"
    merge("liti", out, init=runs["init"], models=[runs["a"]], eta=0.0)
    init = state_of(runs["init"])
    assert all(torch.equal(state_of(out)[k], init[k]) for k in init)
    merge("liti", out, init=runs["init"], models=[runs["a"]], eta=1.0, force=True)
    a = state_of(runs["a"])
    assert all(torch.equal(state_of(out)[k], a[k]) for k in a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folder left beside it
    with pytest.raises(InputError, match="not an earlier merge's output \\(no merge.json\\); --force replaces only"):
        merge("liti", runs["c"], init=runs["init"], models=[runs["a"]], eta=0.5, force=True)
    with pytest.raises(InputError, match="OUT .*: is also MODEL"):
        merge("linear", runs["a"], init=runs["init"], models=[runs["a"]], force=True)


def test_a_damaged_input_checkpoint_is_refused_and_out_left_alone(runs, tmp_path):
    broken = clone(runs["init"], tmp_path / "broken", seed=99)
    weights = layout.checkpoints_dir(broken) / layout.step_dir_name(1) / layout.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"^MODEL {broken}: {weights}: digest mismatch"):
        merge("slerp", out, init=runs["init"], models=[runs["a"], broken])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_inputs_must_be_one_architecture_and_a_hugging_face_folder_can_be_one(runs, tmp_path):
    from rizzrun.models.hf_llama import save_hf_llama
    from rizzrun.models.llama import Llama
    from rizzrun.runner.generate import load_run

    _, _, model = load_run(runs["b"])
    save_hf_llama(model, tmp_path / "hf_b")
    out = tmp_path / "via_hf"
    merge("slerp", out, init=runs["init"], models=[runs["a"], tmp_path / "hf_b"], lam=0.5)
    init, a, b = (state_of(runs[k]) for k in ("init", "a", "b"))
    want = slerp(init, a, b, 0.5)
    assert all(torch.equal(state_of(out)[k], want[k]) for k in want)
    record = json.loads((out / "merge.json").read_text())
    assert [i["kind"] for i in record["inputs"]] == ["run", "run", "hf"]
    c = model.config
    other = Llama(vocab_size=c.vocab_size, d_model=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
                  n_kv_head=c.n_kv_head, d_ff=48, max_seq_len=c.max_seq_len, tie_embeddings=True)
    save_hf_llama(other, tmp_path / "hf_wide")
    with pytest.raises(InputError, match=f"^MODEL {tmp_path / 'hf_wide'}: d_ff=48 but the template --init "
                                         f"{runs['init']} has d_ff=64; every input must be the same architecture"):
        merge("linear", tmp_path / "x", init=runs["init"], models=[tmp_path / "hf_wide"])
    with pytest.raises(InputError, match="every input is a Hugging Face folder; give at least one run folder"):
        merge("linear", tmp_path / "x", init=tmp_path / "hf_b", models=[tmp_path / "hf_b"])


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="slerp", models=["A"]), "--init: required by `merge slerp`"),
    (dict(method="slerp", init="I", models=["A", "A", "A"], lam=0.3), "--lam 0.3: only with exactly 2 models"),
    (dict(method="linear", init="I", models=["A", "A"], weights="1,2,3"), "--weights 1,2,3: 3 weight(s) for 2"),
    (dict(method="linear", init="I", models=["A"], eta=0.5), "--eta: not an option of `merge linear` (only of slerp, "
                                                             "liti)"),
    (dict(method="paramdelta", new_base="I", posts=["A"], bases=["A"], alphas=[1.0, 2.0]),
     "--alpha: 2 given for 1 --post/--base pair"),
    (dict(method="paramdelta", new_base="I", posts=["A"], bases=["A"], init="I"), "--init: not an option of "
                                                                                  "`merge paramdelta`"),
    (dict(method="average", init="I"), "METHOD average: no such merge method; allowed: slerp, linear, liti, "
                                       "paramdelta"),
])
def test_bad_flags_are_one_line_naming_the_flag(runs, tmp_path, kwargs, message):
    paths = {"I": str(runs["init"]), "A": str(runs["a"])}

    def fix(v):
        return [paths.get(x, x) for x in v] if isinstance(v, list) else paths.get(v, v)

    kwargs = {k: fix(v) if k in ("init", "models", "new_base", "posts", "bases") else v for k, v in kwargs.items()}
    with pytest.raises(InputError) as e:
        merge(kwargs.pop("method"), tmp_path / "out", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_path_that_is_no_model_folder_is_named(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"^--post {tmp_path / 'empty'}: not a run folder \\(no config.yaml\\) nor a "
                                         "Hugging Face Llama folder"):
        merge("paramdelta", tmp_path / "o", new_base=runs["init"], posts=[tmp_path / "empty"], bases=[runs["a"]])


def test_a_run_whose_tokenizer_encodes_differently_is_refused(runs, tmp_path, monkeypatch):
    import rizzrun.runner.generate as generate

    real = generate.load_run_checkpoint

    class OtherTokenizer:
        fingerprint = "another-mapping"

    def load(run_dir, checkpoint=None):
        cfg, tokenizer, model, folder = real(run_dir, checkpoint)
        return cfg, (OtherTokenizer() if Path(run_dir) == runs["b"] else tokenizer), model, folder

    monkeypatch.setattr(generate, "load_run_checkpoint", load)
    with pytest.raises(InputError, match=f"^--post {runs['b']} \\(against the template --new-base {runs['init']}\\): "
                                         "that run's tokenizer \\(OtherTokenizer\\) encodes differently"):
        merge("paramdelta", tmp_path / "o", new_base=runs["init"], posts=[runs["b"]], bases=[runs["a"]])
    assert not (tmp_path / "o").exists()


def test_a_run_that_trained_a_head_of_its_own_is_refused(runs, tmp_path, monkeypatch):
    import rizzrun.runner.generate as generate

    real = generate.objective_weights
    monkeypatch.setattr(generate, "objective_weights",
                        lambda folder: {"head.weight": torch.zeros(1)} if runs["a"] in Path(folder).parents
                        else real(folder))
    with pytest.raises(InputError, match=f"^MODEL {runs['a']}: its objective .* trained weights of its own"):
        merge("linear", tmp_path / "o", init=runs["init"], models=[runs["a"]])


def test_bad_input_is_refused_before_torch_is_imported(runs, tmp_path):
    code = ("import sys\nfrom rizzrun.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'lightning', 'transformers'})\n"
            "print(code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", code, "merge", "slerp", "--init", str(runs["init"]), str(runs["a"]),
                           str(tmp_path / "nope"), str(tmp_path / "o")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.stdout.strip() == "2 []", done.stderr
    assert done.stderr.strip() == (f"error: MODEL {tmp_path / 'nope'}: no such folder; give a run folder "
                                   "(outputs/<date>/...) or a Hugging Face Llama folder")


# --- ParamΔ: the spec's remaining checks (arXiv:2504.21023) ---------------------------------------------

def test_paramdelta_alpha_one_is_the_plain_sum_and_alpha_scales_the_delta():
    post, base, nb = _three(torch.float32, seed=6)
    one = paramdelta(nb, [(post, base, 1.0)])
    half = paramdelta(nb, [(post, base, 0.5)])
    for k in nb:  # a second formulation: float64 numpy
        d = post[k].double().numpy() - base[k].double().numpy()
        assert np.allclose(one[k].numpy(), nb[k].double().numpy() + d, atol=1e-6)
        assert np.allclose(half[k].numpy(), nb[k].double().numpy() + 0.5 * d, atol=1e-6)
    with pytest.raises(ValueError, match="alpha\\[0\\]=nan: not a finite number"):
        paramdelta(nb, [(post, base, float("nan"))])
    with pytest.raises(ValueError, match="at least one \\(post, base, alpha\\) pair"):
        paramdelta(nb, [])


def test_paramdelta_shape_mismatch_in_a_base_is_named():
    nb = sd(w=[[1.0, 2.0, 3.0]], n=[1.0])
    with pytest.raises(ValueError, match=r"^tensor w: shape \(1, 3\) in new_base vs \(3, 1\) in base\[0\]; every "
                                         r"input must have the same shapes"):
        paramdelta(nb, [(nb, sd(w=[[1.0], [2.0], [3.0]], n=[1.0]), 1.0)])
    with pytest.raises(ValueError, match=r"^base\[1\] lacks tensor n \(present in new_base\)"):
        paramdelta(nb, [(nb, nb, 1.0), (nb, sd(w=[[1.0, 2.0, 3.0]]), 1.0)])


def test_paramdelta_grown_vocabulary_is_refused_in_base_and_lm_head_too():
    nb = {"lm_head.weight": torch.zeros(4, 3), "norm": torch.ones(3)}
    grown = {"lm_head.weight": torch.zeros(6, 3), "norm": torch.ones(3)}
    with pytest.raises(ValueError, match=r"^tensor lm_head.weight: 4 rows in new_base vs 6 in base\[0\]: a different "
                                         "vocabulary \\(tokens added or removed\\); merging refuses it"):
        paramdelta(nb, [(nb, grown, 1.0)])
    # not a vocabulary tensor: the plain shape message
    with pytest.raises(ValueError, match=r"^tensor norm: shape \(3\) in new_base vs \(4\) in post\[0\]"):
        paramdelta(nb, [({**nb, "norm": torch.ones(4)}, nb, 1.0)])


def test_paramdelta_is_computed_in_float32_not_in_bf16():
    """Two deltas of 2^-8 each on 1.0: bf16 arithmetic rounds each addition back to 1.0 (round half to
    even), float32 keeps 1 + 2^-7, which bf16 holds exactly."""
    one = torch.tensor([1.0], dtype=torch.bfloat16)
    base = torch.tensor([0.5], dtype=torch.bfloat16)
    post = torch.tensor([0.5 + 2 ** -8], dtype=torch.bfloat16)
    assert float(post - base) == 2 ** -8
    in_bf16 = one + (post - base) + (post - base)
    assert float(in_bf16) == 1.0  # what computing in the checkpoints' dtype would give
    out = paramdelta({"w": one}, [({"w": post}, {"w": base}, 1.0), ({"w": post}, {"w": base}, 1.0)])["w"]
    assert out.dtype == torch.bfloat16 and float(out) == 1.0 + 2 ** -7


def test_cli_paramdelta_with_alphas_matches_the_arithmetic(runs, tmp_path, capsys):
    from rizzrun.cli import main

    out = tmp_path / "pd"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["merge", "paramdelta", "--new-base", str(runs["a"]), "--post", str(runs["b"]), "--base",
              str(runs["init"]), "--post", str(runs["c"]), "--base", str(runs["init"]), "--alpha", "0.5", "--alpha", "-1",
              str(out)])
    assert e.value.code in (0, None)
    printed = capsys.readouterr().out
    assert f"merged (paramdelta) -> {out}" in printed and '"alphas": [0.5, -1.0]' in printed
    init, a, b, c = (state_of(runs[k]) for k in ("init", "a", "b", "c"))
    got = state_of(out)
    for k in init:  # float64 second formulation
        want = a[k].double() + 0.5 * (b[k].double() - init[k].double()) - (c[k].double() - init[k].double())
        assert torch.allclose(got[k].double(), want, atol=1e-6), k
    record = json.loads((out / "merge.json").read_text())
    assert [(i["role"], i["index"]) for i in record["inputs"]] == [("new_base", 0), ("post", 0), ("base", 0),
                                                                    ("post", 1), ("base", 1)]
    assert cli_error(["merge", "paramdelta", "--new-base", str(runs["a"]), "--post", str(runs["b"]),
                      str(tmp_path / "x")], capsys).startswith(
        "error: --post / --base: 1 --post and 0 --base given")
    assert not (tmp_path / "x").exists()


def test_cli_paramdelta_refuses_a_post_trained_model_with_a_grown_vocabulary(runs, tmp_path):
    from rizzrun.models.hf_llama import save_hf_llama
    from rizzrun.models.llama import Llama
    from rizzrun.runner.generate import load_run

    _, _, model = load_run(runs["b"])
    c = model.config
    grown = Llama(vocab_size=c.vocab_size + 2, d_model=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
                  n_kv_head=c.n_kv_head, d_ff=c.d_ff, max_seq_len=c.max_seq_len, tie_embeddings=True)
    save_hf_llama(grown, tmp_path / "hf_grown")
    with pytest.raises(InputError, match=f"^--post {tmp_path / 'hf_grown'}: vocab_size={c.vocab_size + 2} but the "
                                         f"template --new-base {runs['a']} has vocab_size={c.vocab_size}"):
        merge("paramdelta", tmp_path / "o", new_base=runs["a"], posts=[tmp_path / "hf_grown"], bases=[runs["init"]])
    assert not (tmp_path / "o").exists()
