"""SCoRe (arXiv:2409.12917, rizzrun.objectives.score) and its SFT data (rizzrun.data.retry), against
independent computations: the spec's numeric sanity example, the two-attempt rollout's tensors by hand
on a model whose next tokens are fixed, per-turn losses and gradients from a per-row loop written
here (each row run alone, no padding), the turn-2 loss's gradient at the logits of x_2's conditioning
positions (zero), metrics by hand, the SFT template against the rollout's x_2, a short runner run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rizzrun.data.arithmetic import wrong_answer
from rizzrun.data.retry import ArithmeticRetrySFT, retry_documents
from rizzrun.decoders.greedy import Greedy
from rizzrun.decoders.sample import Sample
from rizzrun.errors import InputError
from rizzrun.models.llama import Llama
from rizzrun.objectives.score import (SCoRe, attempt_metrics, baseline_advantages, edit_distance, edit_ratio,
                                      second_prompt, turn_returns, two_attempt_rollout)
from rizzrun.tokenizers.byte import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the spec's numeric sanity example ----------------------------------------------------------

def test_spec_sanity_example_totals():
    r1 = torch.tensor([0.0, 1.0, 1.0, 0.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    shaped = turn_returns(r1, r2, stage=2, alpha=10.0)
    assert shaped[:, 1].tolist() == [11.0, 1.0, -10.0, 0.0]  # r~_2
    assert shaped.sum(1).tolist() == [11.0, 2.0, -9.0, 0.0]  # totals
    naive = turn_returns(r1, r2, stage=2, alpha=0.0)  # no shaping: (1,1) beats (0,1)
    assert naive.sum(1).tolist() == [1.0, 2.0, 1.0, 0.0]
    stage1 = turn_returns(r1, r2, stage=1, alpha=10.0)  # Stage I: r2 only, alpha unused
    assert stage1.tolist() == [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    ret = turn_returns(r1, r2, stage=2, alpha=10.0, credit="return")  # y_1 credited with the whole return
    assert ret.tolist() == [[11.0, 11.0], [2.0, 1.0], [-9.0, -10.0], [0.0, 0.0]]


def test_baselines_by_hand():
    R = torch.tensor([[1.0, 4.0], [3.0, 0.0], [5.0, 2.0], [0.0, 0.0], [2.0, 2.0], [4.0, 6.0]])
    A = baseline_advantages(R, 3)
    for n in range(6):
        g = n // 3 * 3
        for k in range(2):
            assert A[n, k].item() == pytest.approx(R[n, k].item() - sum(R[g + j, k].item() for j in range(3)) / 3)
    L = baseline_advantages(R, 3, "rloo")
    for n in range(6):
        g = n // 3 * 3
        others = [R[g + j, 0].item() for j in range(3) if g + j != n]
        assert L[n, 0].item() == pytest.approx(R[n, 0].item() - sum(others) / 2)


def test_edit_distance_and_metrics_by_hand():
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 5]) == 2
    assert edit_distance([5, 6], [6, 5]) == 2 and edit_distance([1, 2], [1, 2]) == 0
    assert edit_ratio([1, 2, 3, 4], [1, 9, 3]) == pytest.approx(2 / 4) and edit_ratio([], []) == 0.0
    r1 = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    m = attempt_metrics(r1, r2, torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0]))
    assert m["accuracy@t1"].item() == pytest.approx(2 / 5) and m["accuracy@t2"].item() == pytest.approx(3 / 5)
    assert m["delta/t1_t2"].item() == pytest.approx(1 / 5)
    assert m["delta/i_to_c"].item() == pytest.approx(2 / 5) and m["delta/c_to_i"].item() == pytest.approx(1 / 5)
    assert m["edit_distance_ratio"].item() == pytest.approx(2.5 / 5)


# ---- a model whose next token is fixed by hand ----------------------------------------------------

class Chain(nn.Module):
    """logits depend only on the token just read: 10 for NEXT[token], 0 elsewhere (tests/test_rollouts.py)."""

    V, EOS = 10, 9
    # 1 -> 2 -> EOS ; 3 -> 4 -> EOS ; 5 -> 6 -> 5 ... (never EOS) ; 8 (the instruction) -> 3 ; pad/EOS -> 1
    NEXT = {0: 1, 1: 2, 2: 9, 3: 4, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 1}

    def __init__(self):
        super().__init__()
        table = torch.zeros(self.V, self.V)
        for a, b in self.NEXT.items():
            table[a, b] = 10.0
        self.table = nn.Parameter(table)

    def forward(self, input_ids, key_padding_mask=None):
        return self.table[input_ids]

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None, **state_options):
        return {}

    def step(self, input_ids, cache, key_padding_mask=None, return_hidden=False):
        return self.table[input_ids]


def prompts_batch(rows: list[list[int]], ids: list[int]) -> dict:
    width = max(map(len, rows))
    out = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = True
    return {"prompt_ids": out, "prompt_mask": mask, "row": torch.tensor(ids)}


def scorer(targets: dict[int, list[int]], G: int, log: list | None = None):
    """score(rollout): 1.0 where a row's completion (EOS dropped) equals its data row's target ids."""

    def score(rollout: dict) -> dict:
        C = rollout["completion_mask"].shape[1]
        rows = rollout["row"].tolist()
        assert rollout["group"].tolist() == [n // G for n in range(len(rows))]
        got = [[t for t, k in zip(r, m) if k and t != Chain.EOS]
               for r, m in zip(rollout["input_ids"][:, -C:].tolist(), rollout["completion_mask"].tolist())]
        rollout["rewards"] = torch.tensor([float(g == targets[row]) for g, row in zip(got, rows)])
        rollout["reward_per_function"] = rollout["rewards"].unsqueeze(1)
        if log is not None:
            log.append(got)
        return rollout

    return score


@pytest.mark.parametrize("G", [1, 2])
def test_two_attempt_rollout_by_hand(G):
    """x_1 = [EOS, 1]: y_1 = [2, EOS]; [EOS, 5]: y_1 = [6, 5, 6] truncated (max 3 tokens). Instruction [8]
    without restating: x_2 ends with 8 and y_2 = [3, 4, EOS] for every row."""
    E = Chain.EOS
    batch = prompts_batch([[E, 1], [E, 7, 5]], ids=[4, 9])
    # data row 4's answer is [3, 4] (turn 1 wrong, turn 2 right); row 9's is [6, 5, 6]: turn 1 matches the
    # target but is truncated, so r1 = 0
    targets = {4: [3, 4], 9: [6, 5, 6]}
    log = []
    r = two_attempt_rollout(Chain(), Greedy(max_new_tokens=3), batch, scorer(targets, G, log), E, G, [8],
                            restate_prompt=False)
    x2 = {0: [E, 1, 2, E, 8], 1: [E, 7, 5, 6, 5, 6, E, 8]}
    N = 2 * G
    assert r["truncated"].tolist() == [n >= G for n in range(N)]
    assert r["rewards"].tolist() == [0.0] * N  # wrong, and truncated (although it matches)
    assert log[0] == [[2]] * G + [[6, 5, 6]] * G
    assert r["t2_completion_mask"].shape == (N, 3) and r["t2_input_ids"].shape == (N, 8 + 3)
    for n in range(N):
        want = x2[n // G]
        pad = 8 - len(want)
        assert r["t2_input_ids"][n].tolist() == [0] * pad + want + [3, 4, E]
        assert r["t2_attention_mask"][n].tolist() == [False] * pad + [True] * (len(want) + 3)
    assert r["t2_completion_mask"].all() and not r["t2_truncated"].any()
    assert r["t2_rewards"].tolist() == [1.0] * G + [0.0] * G  # turn 2 ran after the truncated y_1
    assert r["edit_ratio"].tolist() == pytest.approx([1.0] * G + [1.0] * G)  # [2] vs [3, 4]; [6,5,6] vs [3,4]
    assert r["row"].tolist() == [4] * G + [9] * G


def test_restated_prompt_and_sft_template_agree():
    """x_2 with restate_prompt repeats the problem without its EOS; the retry SFT documents, packed with
    EOS between them, are exactly x_2 of a first attempt c' followed by the corrected sum."""
    E = Chain.EOS
    r = two_attempt_rollout(Chain(), Greedy(max_new_tokens=4), prompts_batch([[E, 7, 1]], [0]),
                            scorer({0: [2]}, 1), E, 1, [8], restate_prompt=True)
    assert r["t2_input_ids"][0].tolist()[:9] == [E, 7, 1, 2, E, 8, 7, 1, 2]  # x_2 then y_2 (1 -> 2 -> EOS)
    assert r["rewards"].tolist() == [1.0] and r["t2_rewards"].tolist() == [1.0] and r["edit_ratio"].item() == 0
    tok = ByteTokenizer()
    docs = retry_documents([(37, 48)], 1.0, " retry:")
    c_wrong = wrong_answer(37, 48)
    assert docs == [f"37+48={c_wrong}", " retry:37+48=85"]
    stream = [tok.eos_id] + tok.encode(docs[0]) + [tok.eos_id] + tok.encode(docs[1])
    x1 = [tok.eos_id] + tok.encode("37+48=")
    assert stream == second_prompt(x1, tok.encode(str(c_wrong)), tok.eos_id, tok.encode(" retry:")) + tok.encode("85")


def test_retry_sft_documents():
    data = ArithmeticRetrySFT(retry_rate=0.5, n_train=200, n_val=20)
    train = data.documents("train")
    fixes = [d for d in train if d.startswith(" retry:")]
    assert len(train) == 200 + len(fixes) and 60 < len(fixes) < 140  # one document per problem, two per fix
    for i, d in enumerate(train):
        if d.startswith(" retry:"):
            a, b = map(int, d[len(" retry:"):].split("=")[0].split("+"))
            assert train[i - 1] == f"{a}+{b}={wrong_answer(a, b)}" and d.endswith(f"={a + b}")
    assert all(" retry:" not in d for d in data.documents("val"))
    assert ArithmeticRetrySFT(retry_rate=0.0, n_train=50, n_val=5).documents("train") == \
        [p + a for p, a in data.__class__(retry_rate=0.0, n_train=50, n_val=5).problems("train")]
    kept = ArithmeticRetrySFT(retry_rate=0.3, keep_rate=0.3, n_train=200, n_val=20).documents("train")
    pairs = [(kept[i - 1], d) for i, d in enumerate(kept) if d.startswith(" retry:")]
    same = [p for p in pairs if p[0] == p[1][len(" retry:"):]]  # a right first attempt, repeated
    assert 30 < len(same) < 90 and 30 < len(pairs) - len(same) < 90
    assert ArithmeticRetrySFT(retry_rate=0.3, keep_rate=0.3).fingerprint != ArithmeticRetrySFT(retry_rate=0.3).fingerprint
    with pytest.raises(InputError, match="data.keep_rate"):
        ArithmeticRetrySFT(retry_rate=0.6, keep_rate=0.5)
    with pytest.raises(InputError, match="data.retry_rate"):
        ArithmeticRetrySFT(retry_rate=1.5)
    with pytest.raises(InputError, match="data.packing"):
        ArithmeticRetrySFT(packing="document")


def test_seeded_decoder_draws_turn_two_from_another_seed():
    """A seeded sampler restarts at its seed every generate call: turn 2 must not reuse turn 1's draws."""
    torch.manual_seed(0)
    model = Llama(Chain.V, d_model=16, n_layer=1, n_head=2, n_kv_head=1, d_ff=32, max_seq_len=64, init_std=0.02).eval()
    dec = Sample(max_new_tokens=6, temperature=1.0, seed=123)
    seen = []

    class Spy(Sample):
        def generate(self, model, ids, **kw):
            seen.append(self.seed)
            return super().generate(model, ids, **kw)

    spy = Spy(max_new_tokens=6, temperature=1.0, seed=123)
    two_attempt_rollout(model, spy, prompts_batch([[9, 1]], [0]), scorer({0: [1]}, 2), Chain.EOS, 2, [8])
    assert seen == [123, 124] and spy.seed == 123
    assert dec.seed == 123


# ---- losses against a per-row loop ----------------------------------------------------------------

def tiny_llama(seed: int) -> Llama:
    torch.manual_seed(seed)
    return Llama(Chain.V, d_model=16, n_layer=1, n_head=2, n_kv_head=1, d_ff=32, max_seq_len=64, init_std=0.3)


def sampled_rollout(G: int = 3, rewards=None, seed: int = 0) -> dict:
    model = tiny_llama(seed).eval()
    batch = prompts_batch([[9, 1, 2], [9, 3], [9, 5, 6, 7]], [0, 1, 2])
    r = two_attempt_rollout(model, Sample(max_new_tokens=4, temperature=1.0, seed=7), batch,
                            scorer({0: [], 1: [], 2: []}, G), Chain.EOS, G, [8, 8])
    N = 3 * G
    g = torch.Generator().manual_seed(seed)
    r1, r2 = (torch.randint(0, 2, (N,), generator=g).float() for _ in range(2)) if rewards is None else rewards
    r["rewards"], r["t2_rewards"] = r1, r2
    return r


def row_logps(model, ids: torch.Tensor, attention: torch.Tensor, cmask: torch.Tensor) -> list[torch.Tensor]:
    """Each row alone, padding removed: log softmax of the next-token logits at its completion tokens."""
    out = []
    C = cmask.shape[1]
    for n in range(ids.shape[0]):
        P = ids.shape[1] - C
        keep = attention[n, :P].bool()
        prompt = ids[n, :P][keep]
        comp = ids[n, P:][cmask[n]]
        seq = torch.cat([prompt, comp]).unsqueeze(0)
        logits = model(seq[:, :-1])[0]
        lp = torch.log_softmax(logits.float(), -1)[len(prompt) - 1:].gather(1, comp.unsqueeze(1)).squeeze(1)
        out.append(lp)
    return out


def hand_loss(model, ref, r: dict, stage: int, alpha: float, b1: float, b2: float, G: int, credit: str = "turn"):
    """sum over turns of the mean over rows of sum_t (-A rho + beta k3) / T, by loops; and its REINFORCE form."""
    N = r["rewards"].shape[0]
    r1, r2 = r["rewards"].tolist(), r["t2_rewards"].tolist()
    if stage == 1:
        R = [[0.0, r2[n]] for n in range(N)]
        betas = (b2, b1)
    else:
        R = [[r1[n], r2[n] + alpha * (r2[n] - r1[n])] for n in range(N)]
        betas = (b1, b1)
    if credit == "return":
        R = [[a + b, b] for a, b in R]
    loss, reinforce = 0.0, 0.0
    for k, pre in enumerate(("", "t2_")):
        lps = row_logps(model, r[pre + "input_ids"], r[pre + "attention_mask"], r[pre + "completion_mask"])
        with torch.no_grad():
            refs = row_logps(ref, r[pre + "input_ids"], r[pre + "attention_mask"], r[pre + "completion_mask"])
        total, total_r = 0.0, 0.0
        for n in range(N):
            group = [R[(n // G) * G + j][k] for j in range(G)]
            A = R[n][k] - sum(group) / G
            lp, lref = lps[n], refs[n]
            T = max(len(lp), 1)
            k3 = torch.exp(lref - lp) - (lref - lp) - 1
            total = total + (-A * torch.exp(lp - lp.detach()) + betas[k] * k3).sum() / T
            total_r = total_r + (-A * lp + betas[k] * k3).sum() / T
        loss, reinforce = loss + total / N, reinforce + total_r / N
    return loss, reinforce


@pytest.mark.parametrize("stage,alpha,credit", [(1, 10.0, "turn"), (2, 10.0, "turn"), (2, 0.0, "turn"),
                                                (2, 10.0, "return"), (1, 10.0, "return")])
def test_loss_and_gradients_match_a_per_row_loop(stage, alpha, credit):
    G = 3
    r = sampled_rollout(G)
    policy, ref = tiny_llama(1), tiny_llama(2).eval()
    obj = SCoRe(stage=stage, alpha=alpha, beta_1=0.05, beta_2=0.7, credit=credit, num_generations=G)
    batch = obj.prepare(policy, r, reference=ref)
    loss, metrics = obj(policy, batch)
    loss.backward()
    got = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    want, reinforce = hand_loss(policy, ref, r, stage, alpha, 0.05, 0.7, G, credit)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    reinforce.backward()  # same gradient as -A log pi (+ KL): the ratio form only changes the value
    for a, p in zip(got, policy.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    assert metrics["completions"].item() == 3 * G
    m = attempt_metrics(r["rewards"], r["t2_rewards"], r["edit_ratio"])
    for k, v in m.items():
        assert metrics[k].item() == pytest.approx(v.item())


def test_kl_only_on_each_turns_generated_tokens():
    """Zero advantages (equal rewards): the loss is beta_1 (KL turn 1 + KL turn 2), each the per-row mean
    of k3 over that turn's own completion tokens, as the per-row loop computes it (each row alone: x_1,
    y_1 inside x_2, the instruction and the restated problem are context, never KL terms); the logged
    kl/t1, kl/t2 are token means over those tokens; a reference equal to the policy gives 0."""
    G = 2
    N = 6
    r = sampled_rollout(G, rewards=(torch.ones(N), torch.ones(N)))
    policy, ref = tiny_llama(1), tiny_llama(3).eval()
    obj = SCoRe(stage=2, alpha=10.0, beta_1=0.3, num_generations=G)
    batch = obj.prepare(policy, r, reference=ref)
    loss, metrics = obj(policy, batch)
    want, _ = hand_loss(policy, ref, r, 2, 10.0, 0.3, 0.0, G)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # KL per turn: token mean of k3 over that turn's completion mask only
    for k, pre in enumerate(("", "t2_")):
        lps = row_logps(policy, r[pre + "input_ids"], r[pre + "attention_mask"], r[pre + "completion_mask"])
        refs = row_logps(ref, r[pre + "input_ids"], r[pre + "attention_mask"], r[pre + "completion_mask"])
        k3 = torch.cat([torch.exp(b - a) - (b - a) - 1 for a, b in zip(lps, refs)])
        assert metrics[f"kl/t{k + 1}"].item() == pytest.approx(k3.mean().item(), rel=1e-5)
    # the reference = the policy: every KL term 0 whatever the masked positions hold
    same = obj.prepare(policy, r, reference=policy)
    loss0, m0 = obj(policy, same)
    assert abs(loss0.item()) < 1e-6 and m0["kl/t1"].item() < 1e-7 and m0["kl/t2"].item() < 1e-7


def test_y1_gets_no_gradient_through_the_turn_two_loss():
    """The turn-2 forward's logits get gradient only at positions predicting y_2 tokens: none at those
    that read or predict x_1, y_1, the instruction, the restated prompt, or padding. Stage I with
    beta_2 = 0 and turn credit: the turn-1 loss is 0 with no gradient at any turn-1 logit."""
    G = 2
    r = sampled_rollout(G, rewards=(torch.tensor([1.0, 0, 0, 1, 1, 0]), torch.tensor([0.0, 1, 1, 0, 1, 0])))
    policy = tiny_llama(1)
    grads = []

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids, key_padding_mask=None):
            out = self.inner(ids, key_padding_mask=key_padding_mask)
            out.retain_grad()
            grads.append(out)
            return out

    obj = SCoRe(stage=1, beta_1=0.0, beta_2=0.0, num_generations=G)
    batch = obj.prepare(policy, r)
    loss, _ = obj(Spy(policy), batch)
    loss.backward()
    t1, t2 = grads  # turn 1's forward, then turn 2's
    assert t1.grad.abs().max().item() == 0.0
    C2 = r["t2_completion_mask"].shape[1]
    width = r["t2_input_ids"].shape[1] - 1  # inputs = ids[:, :-1]
    P2 = width + 1 - C2
    g = t2.grad.abs().sum(-1)  # (N, width)
    predicts_y2 = torch.zeros_like(g, dtype=torch.bool)
    predicts_y2[:, P2 - 1:] = r["t2_completion_mask"]
    assert g[~predicts_y2].max().item() == 0.0
    A = batch["advantages"][:, 1]
    assert all(g[n][predicts_y2[n]].min().item() > 0 for n in range(6) if A[n] != 0)


# ---- objective settings and the runner -----------------------------------------------------------

def test_bad_settings_are_refused():
    for kw, key in (({"stage": 3}, "objective.stage"), ({"alpha": -1}, "objective.alpha"),
                    ({"credit": "x"}, "objective.credit"), ({"baseline": "std"}, "objective.baseline"),
                    ({"num_generations": 1}, "objective.num_generations"), ({"instruction": ""}, "objective.instruction"),
                    ({"beta_2": float("nan")}, "objective.beta_2")):
        with pytest.raises(InputError, match=key):
            SCoRe(**kw)
    assert SCoRe(stage=1).betas == (0.1, 0.01) and SCoRe(stage=1, stage1_turn2_kl=False).betas == (0.1, 0.0)
    assert SCoRe().betas == (0.01, 0.01)
    r = sampled_rollout(2)
    with pytest.raises(ValueError, match="models.reference"):
        SCoRe(num_generations=2).prepare(tiny_llama(1), r)
    with pytest.raises(ValueError, match="lacks"):
        SCoRe(num_generations=2).prepare(tiny_llama(1), {"rewards": torch.zeros(2)})


def test_a_short_run_logs_the_attempt_metrics(tmp_path, shared_cache):
    from rizzrun import layout
    from rizzrun.config import compose
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    tiny = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
            "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler=constant", "optimizer.lr=1e-3",
            "trainer.num_threads=1", "data=arithmetic_prompts", "data.n_train=24", "data.n_val=6",
            "data.batch_size=3", "decoder=sample", "decoder.max_new_tokens=4", "trainer.samples_per_val=0",
            "trainer.val_every=2", "trainer.checkpoint_every=2", "objective=score", "objective.num_generations=4",
            "trainer.max_steps=2", f"cache_dir={shared_cache}"]
    summary = run(compose(tiny), tmp_path / "run")
    assert summary["status"] == "completed"
    rows = [r for r in read_metrics(tmp_path / "run" / layout.METRICS) if "train/loss" in r]
    assert len(rows) == 2
    for r in rows:
        assert r["train/completions"] == 12
        for k in ("accuracy@t1", "accuracy@t2", "delta/i_to_c", "delta/c_to_i", "edit_distance_ratio"):
            assert 0 <= r[f"train/{k}"] <= 1
        assert r["train/delta/t1_t2"] == pytest.approx(r["train/accuracy@t2"] - r["train/accuracy@t1"], abs=1e-6)
        assert r["train/reward"] == pytest.approx(r["train/accuracy@t1"])  # the rollout's rewards are turn 1's
