"""MiniLLM (arXiv:2306.08543) against the spec's numbers, naive loops over the vocabulary (float64,
one completion at a time, no padding), autograd of the exact KL, a hand-written PG loop, hand
computed length-normalised returns, a chi-square test of the teacher-mixed sampler's draws against
alpha p + (1 - alpha) q, and the whole runner with a teacher run folder."""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import pytest
import torch
import yaml

from llama_twins import llama_dims
from rizzrun.config.specs import spec_of
from rizzrun.decoders.sample import Sample
from rizzrun.errors import InputError
from rizzrun.models.llama import Llama
from rizzrun.objectives import minillm_spec
from rizzrun.objectives.minillm import (MiniLLM, MixedStepper, TeacherMixedSample, exact_kl, minillm_advantages,
                                        mixture_log_probs, pg_token_losses, token_rewards, whiten)
from rizzrun.rollouts import completion_logps
from sampling_checks import chi2_pvalue

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
V = 40
EOS = 1
PROMPTS = [[5, 6, 7], [8, 9]]
COMPLETIONS = [[10, 11, EOS], [12, 13, 14, 15], [16, EOS], [17, 18, 19, 20]]
G = 2


def tiny(seed=0):
    torch.manual_seed(seed)
    return Llama(V, **llama_dims(64)).float()


def teacher_of(model, seed=1, scale=0.3):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other.eval().requires_grad_(False)


def make_rollout():
    P = max(len(p) for p in PROMPTS)
    C = max(len(c) for c in COMPLETIONS)
    N = len(COMPLETIONS)
    ids = torch.zeros(N, P + C, dtype=torch.long)
    attention = torch.zeros(N, P + C, dtype=torch.bool)
    for i, c in enumerate(COMPLETIONS):
        p = PROMPTS[i // G]
        ids[i, P - len(p):P] = torch.tensor(p)
        attention[i, P - len(p):P] = True
        ids[i, P:P + len(c)] = torch.tensor(c)
        attention[i, P:P + len(c)] = True
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": attention[:, P:].clone(),
            "truncated": torch.tensor([EOS not in c for c in COMPLETIONS]), "group": torch.arange(N) // G,
            "row": torch.arange(N) // G, "temperature": torch.tensor(1.0)}


def row_log_softmax(model, i):
    """(len(c), V) float64 log-softmax predicting completion i's tokens, from its own unpadded forward."""
    p, c = PROMPTS[i // G], COMPLETIONS[i]
    ids = torch.tensor([p + c])
    logits = model(ids[:, :-1])[0, len(p) - 1:].double()
    return torch.log_softmax(logits, -1)


# --- the spec's numbers ------------------------------------------------------------------------------

def test_spec_sanity_numbers():
    q, p = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.9, 0.1]]).log()
    assert exact_kl(q, p).item() == pytest.approx(0.5108, abs=5e-5)
    assert exact_kl(p, q).item() == pytest.approx(0.3681, abs=5e-5)
    assert exact_kl(q, p).item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel=1e-6)
    # a token q never picks adds nothing, even where p is 0 (the code masks inf positions to 0)
    q0 = torch.tensor([[0.0, 1.0]]).log()
    assert exact_kl(q0, torch.tensor([[-math.inf, 0.0]])).item() == 0.0


# --- single-step KL: naive vocabulary loop and autograd -------------------------------------------------

@pytest.mark.parametrize("variant", ["token_rkl", "token_fkl"])
def test_exact_kl_loss_equals_a_naive_vocabulary_loop_and_its_gradient(variant):
    student = tiny()
    teacher = teacher_of(student)
    objective = MiniLLM(variant=variant, num_generations=G, teacher_mix_alpha=0.0)
    batch = objective.prepare(student, make_rollout(), teacher=teacher)
    loss, metrics = objective(student, batch, teacher=teacher)
    loss.backward()
    got = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    naive_student = copy.deepcopy(student).double()
    total, count = 0.0, 0
    for i in range(len(COMPLETIONS)):
        log_q = row_log_softmax(naive_student, i)
        with torch.no_grad():
            log_p = row_log_softmax(teacher.double(), i)
        for t in range(log_q.shape[0]):
            for v in range(V):
                if variant == "token_rkl":
                    total = total + log_q[t, v].exp() * (log_q[t, v] - log_p[t, v])
                else:
                    total = total + log_p[t, v].exp() * (log_p[t, v] - log_q[t, v])
            count += 1
    teacher.float()
    naive = total / count
    naive.backward()
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5, abs=1e-7)
    assert metrics["tokens"].item() == count
    for n, p in naive_student.named_parameters():
        torch.testing.assert_close(got[n].double(), p.grad, rtol=1e-4, atol=1e-7)


def test_single_step_gradient_equals_autograd_of_the_exact_kl_in_logits():
    """d/dz KL(softmax(z) || p) = q * (log q - log p - KL): the closed form, against autograd."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, V, generator=g, dtype=torch.float64, requires_grad=True)
    log_p = torch.log_softmax(torch.randn(5, V, generator=g, dtype=torch.float64), -1)
    log_q = torch.log_softmax(z, -1)
    kl = exact_kl(log_q, log_p)
    kl.sum().backward()
    with torch.no_grad():
        q = log_q.exp()
        closed = q * (log_q - log_p - kl.unsqueeze(-1))
    torch.testing.assert_close(z.grad, closed)


# --- rewards, length-normalised returns, whitening, the PG term ---------------------------------------

def test_rewards_scaling_clipping_and_mask():
    p, q, m = torch.tensor([[-1.0, -0.5, -2.0]]), torch.tensor([[-2.0, -0.25, -0.1]]), torch.tensor([[1, 1, 0]])
    r = token_rewards(p, q, m, reward_scaling=0.5, cliprange_reward=100.0)
    torch.testing.assert_close(r, torch.tensor([[2.0, -0.5, 0.0]]))
    r = token_rewards(p, q, m, reward_scaling=0.5, cliprange_reward=1.0)
    torch.testing.assert_close(r, torch.tensor([[1.0, -0.5, 0.0]]))
    torch.testing.assert_close(token_rewards(p, q, m, None, None), torch.tensor([[1.0, -0.25, 0.0]]))


def test_length_normalised_returns_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    g = 0.5
    # the code: from t on, / valid tokens from t on
    got = minillm_advantages(r, m, gamma=g, include_current=True, whitening=False)
    want = torch.tensor([[(1 + g * 2 + g * g * 3) / 3, (2 + g * 3) / 2, 3 / 1, 0.0],
                         [(4 + g * 5) / 2, 5 / 1, 0.0, 0.0]])
    torch.testing.assert_close(got, want)
    # the paper's R^Norm_{t+1}: after t, / the tokens after t; 0 at the last token
    got = minillm_advantages(r, m, gamma=1.0, include_current=False, whitening=False)
    want = torch.tensor([[(2 + 3) / 2, 3 / 1, 0.0, 0.0], [5 / 1, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(got, want)
    # no length norm: the plain discounted sums
    got = minillm_advantages(r, m, gamma=1.0, include_current=True, length_norm=False, whitening=False)
    torch.testing.assert_close(got, torch.tensor([[6.0, 5.0, 3.0, 0.0], [9.0, 5.0, 0.0, 0.0]]))


def test_whitening_over_all_entries_or_the_mask():
    x = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    vals = [1.0, 2.0, 0.0, 4.0, 0.0, 0.0]
    mean = sum(vals) / 6
    var = sum((v - mean) ** 2 for v in vals) / 5
    torch.testing.assert_close(whiten(x), (x - mean) / math.sqrt(var + 1e-8))
    vals = [1.0, 2.0, 4.0]
    mean = sum(vals) / 3
    var = sum((v - mean) ** 2 for v in vals) / 2
    want = torch.where(m.bool(), (x - mean) / math.sqrt(var + 1e-8), torch.zeros_like(x))
    torch.testing.assert_close(whiten(x, m), want)


def test_pg_term_equals_a_hand_written_loop():
    g = torch.Generator().manual_seed(0)
    N, C = 3, 4
    logps = (-torch.rand(N, C, generator=g) * 2).requires_grad_(True)
    old = logps.detach() + 0.3 * torch.randn(N, C, generator=g)
    adv = torch.randn(N, C, generator=g)
    w = 0.5 + torch.rand(N, C, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    terms = pg_token_losses(logps, old, adv, w, 0.2)
    loss = (terms["loss"] * mask).sum() / mask.sum()
    loss.backward()
    total, n = 0.0, 0
    grad = torch.zeros(N, C)
    for i in range(N):
        for t in range(C):
            if not mask[i, t]:
                continue
            rho = math.exp(logps[i, t].item() - old[i, t].item()) * w[i, t].item()
            a = adv[i, t].item()
            unclipped, clipped = -a * rho, -a * min(max(rho, 0.8), 1.2)
            total += max(unclipped, clipped)
            n += 1
            grad[i, t] = -a * rho if unclipped >= clipped else 0.0  # clipped side: no gradient
    assert loss.item() == pytest.approx(total / n, rel=1e-6)
    torch.testing.assert_close(logps.grad, grad / n)


def test_minillm_loss_on_a_model_equals_the_formula_per_row():
    """The full minillm loss (PG + single step) at mu = 1 equals the same formulas written per row
    from unpadded forwards, with the code's advantages recomputed here."""
    student = tiny()
    teacher = teacher_of(student)
    rollout = make_rollout()
    rollout["sample_logps"] = torch.full(rollout["completion_mask"].shape, -2.0) * rollout["completion_mask"]
    objective = MiniLLM(num_generations=G, teacher_mix_alpha=0.2)
    batch = objective.prepare(student, rollout, teacher=teacher)
    loss, metrics = objective(student, batch, teacher=teacher)
    C = rollout["completion_mask"].shape[1]
    rewards = torch.zeros(len(COMPLETIONS), C)
    old = torch.zeros(len(COMPLETIONS), C)
    for i, c in enumerate(COMPLETIONS):
        with torch.no_grad():
            lq, lp = row_log_softmax(student, i), row_log_softmax(teacher, i)
        for t, y in enumerate(c):
            old[i, t] = lq[t, y]
            rewards[i, t] = (lp[t, y] - lq[t, y]) / 0.5
    torch.testing.assert_close(batch["token_rewards"], rewards, atol=1e-5, rtol=1e-5)
    m = rollout["completion_mask"]
    adv = torch.zeros_like(rewards)
    for i in range(len(COMPLETIONS)):
        T = int(m[i].sum())
        for t in range(T):
            adv[i, t] = sum(0.95 ** (k - t) * rewards[i, k] for k in range(t, T)) / (T - t)
    adv = (adv - adv.mean()) / math.sqrt(adv.var().item() + 1e-8)
    torch.testing.assert_close(batch["advantages"], adv, atol=1e-5, rtol=1e-5)
    w = torch.where(m, torch.exp(old - (-2.0)), torch.ones_like(old))
    torch.testing.assert_close(batch["weights"], w, atol=1e-5, rtol=1e-5)
    total, kl, n = 0.0, 0.0, 0
    for i, c in enumerate(COMPLETIONS):
        with torch.no_grad():
            lq, lp = row_log_softmax(student, i), row_log_softmax(teacher, i)
        for t, y in enumerate(c):
            rho = w[i, t].item()  # mu = 1: q = q_old
            total += max(-adv[i, t].item() * rho, -adv[i, t].item() * min(max(rho, 0.8), 1.2))
            kl += float((lq[t].exp() * (lq[t] - lp[t])).sum())
            n += 1
    assert loss.item() == pytest.approx((total + kl) / n, rel=1e-4)
    assert metrics["reg_loss"].item() == pytest.approx(kl / n, rel=1e-4)
    assert metrics["pg_loss"].item() == pytest.approx(total / n, rel=1e-4)


# --- the teacher-mixed sampler -------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.2, 0.7])
def test_mixed_sampler_draws_alpha_p_plus_one_minus_alpha_q(alpha):
    student = tiny()
    teacher = teacher_of(student, scale=0.5)
    prompt = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        q = torch.softmax(student(prompt)[0, -1].double(), -1)
        p = torch.softmax(teacher(prompt)[0, -1].double(), -1)
    mix = alpha * p + (1 - alpha) * q
    draws = 6000
    decoder = TeacherMixedSample(teacher, alpha, max_new_tokens=1, seed=3)
    out = decoder.generate(student, prompt.expand(draws, -1).contiguous())
    counts = torch.bincount(out[:, -1], minlength=V)
    assert chi2_pvalue(counts, mix) > 1e-3
    # ... and not the student's alone (the test can fail): the mixture differs enough here
    assert float((mix - q).abs().sum()) > 0.1 and chi2_pvalue(counts, q) < 1e-3


def test_sampled_log_probs_equal_the_mixture_of_full_forwards():
    student = tiny()
    teacher = teacher_of(student)
    decoder = TeacherMixedSample(teacher, 0.2, max_new_tokens=5, seed=0)
    prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    out = decoder.generate(student, prompts, attention_mask=mask)
    completion = out[:, 3:]
    got = decoder.last_stepper.sampled_log_probs(completion)
    for b in range(2):
        real = prompts[b][mask[b].bool()].tolist()
        ids = torch.tensor([real + completion[b].tolist()])
        with torch.no_grad():
            want = mixture_log_probs(student(ids[:, :-1]), teacher(ids[:, :-1]), 0.2)[0, len(real) - 1:]
        want = want.gather(-1, completion[b].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(got[b], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_each_prompt_is_prefilled_once_per_group_with_the_same_draws(alpha):
    """num_return_sequences=G (what sample_rollout asks): both caches prefilled on the B prompts, then
    repeated; the same tokens and the same p~ of each sampled token as decoding the B * G repeated prompts."""
    student = tiny()
    teacher = teacher_of(student)
    prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    rows = []
    for model in (student, teacher):
        step = model.step

        def recording(ids, cache, *args, _step=step, **kwargs):
            if ids.shape[1] > 1:
                rows.append(ids.shape[0])
            return _step(ids, cache, *args, **kwargs)

        model.step = recording
    shared = TeacherMixedSample(teacher, alpha, max_new_tokens=5, seed=4)
    out = shared.generate(student, prompts, attention_mask=mask, num_return_sequences=3)
    assert rows == [2] * (1 if alpha == 0 else 2)  # one prefill of the 2 prompts per model, never of 6 rows
    copies = TeacherMixedSample(teacher, alpha, max_new_tokens=5, seed=4)
    want = copies.generate(student, prompts.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0))
    assert torch.equal(out, want)
    completion = out[:, 3:]
    torch.testing.assert_close(shared.last_stepper.sampled_log_probs(completion),
                               copies.last_stepper.sampled_log_probs(completion), atol=1e-6, rtol=1e-6)


def test_alpha_zero_is_exactly_plain_student_sampling_and_w_is_one():
    student = tiny()
    teacher = teacher_of(student)
    prompts = torch.tensor([[5, 6, 7]] * 16)
    plain = Sample(max_new_tokens=6, seed=11).generate(student, prompts, eos_token_id=EOS)
    mixed = TeacherMixedSample(teacher, 0.0, max_new_tokens=6, seed=11).generate(student, prompts, eos_token_id=EOS)
    assert torch.equal(plain, mixed)
    objective = MiniLLM(num_generations=G, teacher_mix_alpha=0.0)
    batch = objective.prepare(student, make_rollout(), teacher=teacher)
    assert bool((batch["weights"] == 1).all())


def test_weights_are_q_over_the_mixture_and_bounded():
    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    data = ArithmeticPrompts(n_train=8, n_val=2, batch_size=2)
    data.setup(tok)
    prompts = next(data.train_batches())
    torch.manual_seed(0)
    student = Llama(tok.vocab_size, **llama_dims(64)).float()
    teacher = teacher_of(student)
    objective = MiniLLM(num_generations=3, teacher_mix_alpha=0.2)
    rollout = objective.rollout(student, Sample(max_new_tokens=5, seed=0), prompts, lambda r: r, tok.eos_id,
                                teacher=teacher)
    batch = objective.prepare(student, rollout, teacher=teacher)
    m = batch["completion_mask"]
    q = completion_logps(student, batch)
    p = completion_logps(teacher, batch)
    mix = torch.log(0.2 * p.exp() + 0.8 * q.exp())
    torch.testing.assert_close(batch["weights"][m], torch.exp(q - mix)[m], atol=1e-4, rtol=1e-4)
    assert float(batch["weights"].max()) <= 1 / 0.8 + 1e-4
    # four PPO steps on it: finite, and the ratio moves
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    losses = []
    for _ in range(4):
        loss, metrics = objective(student, batch, teacher=teacher)
        assert torch.isfinite(loss) and metrics["completions"].item() == 6
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert len(set(losses)) == 4


def test_sampling_settings_must_be_plain_with_mixing():
    student = tiny()
    objective = MiniLLM(num_generations=1)
    prompts = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.ones(1, 2), "row": torch.tensor([0])}
    with pytest.raises(ValueError, match=r"decoder\.temperature=0\.7: MiniLLM's teacher-mixed sampling"):
        objective.rollout(student, Sample(temperature=0.7), prompts, lambda r: r, EOS, teacher=teacher_of(student))
    with pytest.raises(ValueError, match=r"decoder\.top_k=5"):
        objective.rollout(student, Sample(top_k=5), prompts, lambda r: r, EOS, teacher=teacher_of(student))


# --- arguments, config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "gkd"}, r"objective\.variant='gkd': allowed are minillm, token_rkl, token_fkl"),
    ({"num_iterations": 0}, r"objective\.num_iterations=0: must be an integer >= 1"),
    ({"teacher_mix_alpha": 1.5}, r"objective\.teacher_mix_alpha=1.5: must be a number in \[0, 1\]"),
    ({"cliprange": 1.0}, r"objective\.cliprange=1.0: must be a number in \[0, 1\)"),
    ({"reward_scaling": 0}, r"objective\.reward_scaling=0: must be a number > 0 or null"),
    ({"whiten": 1}, r"objective\.whiten=1: must be true or false"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        MiniLLM(**kwargs)


def test_prepare_needs_a_teacher():
    with pytest.raises(ValueError, match="objective.models.teacher"):
        MiniLLM().prepare(tiny(), make_rollout())


def test_yaml_pins_the_code_defaults_and_matches_the_signature():
    node = yaml.safe_load((REPO / "conf/objective/minillm.yaml").read_text())
    assert node.pop("_target_") == "rizzrun.objectives.minillm.MiniLLM"
    assert node.pop("models") == {"teacher": "???"} and node.pop("precompute") == []  # required: no default teacher
    assert "rewards" not in node  # a top-level key, not the objective's
    params = inspect.signature(MiniLLM).parameters
    assert set(node) == set(params)
    assert {k: params[k].default for k in node} == node
    assert node["teacher_mix_alpha"] == 0.2 and node["gamma"] == 0.95 and node["num_iterations"] == 4
    assert spec_of("rizzrun.objectives.minillm.MiniLLM") is minillm_spec


def test_spec_check_requires_a_teacher():
    assert minillm_spec.check({"models": {"teacher": None}}, "objective") == [
        "objective.models.teacher=null: MiniLLM distils a teacher and needs one; allowed: objective.models.teacher="
        "<a run folder (e.g. ${run:sft_teacher_tiny}) or a Hugging Face Llama folder> with the student's tokenizer"]
    assert minillm_spec.check({}, "objective")[0].startswith("objective.models.teacher=null")
    assert minillm_spec.check({"models": {"teacher": "init"}}, "objective")[0].startswith("objective.models.teacher=init")
    assert minillm_spec.check({"models": {"teacher": "/some/run"}}, "objective") == []


# --- the runner ------------------------------------------------------------------------------------------

TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler=constant", "optimizer.lr=1e-3",
        "trainer.num_threads=1", "trainer.samples_per_val=0", "trainer.val_every=4", "trainer.checkpoint_every=4"]


def test_runner_trains_minillm_from_a_teacher_run(tmp_path, shared_cache):
    from rizzrun import layout
    from rizzrun.config import ConfigError, compose, load
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    teacher = tmp_path / "teacher"
    run(compose([*TINY, "data=arithmetic_sft", "data.n_train=24", "data.n_val=6", "data.batch_size=2",
                 "trainer.max_steps=2", "model.d_model=48", f"cache_dir={shared_cache}"]), teacher)
    with pytest.raises(ConfigError, match=r"objective\.models\.teacher=\?\?\?: required value is not set; set it, e.g. objective\.models\.teacher=RUN_FOLDER"):
        load([*TINY, "data=arithmetic_prompts", "objective=minillm"])  # the option's yaml leaves it required
    with pytest.raises(ConfigError, match=r"objective\.models\.teacher=null: MiniLLM distils a teacher"):
        load([*TINY, "data=arithmetic_prompts", "objective=minillm", "objective.models.teacher=null"])
    run_dir = tmp_path / "student"
    summary = run(compose([*TINY, "data=arithmetic_prompts", "data.n_train=24", "data.n_val=6", "data.batch_size=3",
                           "decoder=sample", "decoder.temperature=1.0", "decoder.top_p=1.0", "decoder.top_k=0", "decoder.max_new_tokens=4", "objective=minillm",
                           "objective.num_generations=2", "objective.num_iterations=2", "trainer.max_steps=4",
                           f"objective.models.teacher={teacher}", f"cache_dir={shared_cache}"]), run_dir)
    assert summary["status"] == "completed"
    rows = [r for r in read_metrics(run_dir / layout.METRICS) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["train/completions"] == 6 and math.isfinite(r["train/loss"]) and r["train/reg_loss"] > 0
        assert 0 < r["train/weight"] <= 1 / 0.8 + 1e-4
