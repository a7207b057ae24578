"""DPO and D²PO (arXiv:2305.18290, 2502.14340) against the specs' hand-derived numbers, a per-pair
float64 reference that joins every pair on its own (no padding, no shared helper), the analytic
DPO gradient, and TRL 1.16's own `DPOTrainer._compute_loss` on a transformers Llama with the same
weights."""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from torch import nn

from rizzrun.config.specs import spec_of
from rizzrun.models.hf_llama import from_hf_state_dict
from rizzrun.models.llama import Llama
from rizzrun.objectives import dpo as dpo_module
from rizzrun.objectives import dpo_spec
from rizzrun.objectives.dpo import DPO, dpo_loss
from rizzrun.objectives.extra import Precomputed
from rizzrun.objectives.preference import IGNORE, decay_weights, pair_sequences

REPO = Path(__file__).resolve().parents[1]
V = 61
BETA = 0.1


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# --- the specs' numeric examples, exactly -----------------------------------------------------

# logπ(y_w) = -10, logπ_ref(y_w) = -11, logπ(y_l) = -12, logπ_ref(y_l) = -11: h_w = 1, h_l = -1.
SPEC = dict(chosen_logps=t(-10.0), rejected_logps=t(-12.0), ref_chosen_logps=t(-11.0), ref_rejected_logps=t(-11.0))


def test_spec_sigmoid_example():
    losses, chosen, rejected = dpo_loss(**SPEC, beta=0.1)
    assert losses.item() == pytest.approx(0.5981, abs=5e-5)
    assert losses.item() == pytest.approx(-math.log(sig(0.2)), rel=1e-6)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.1)
    assert (chosen - rejected).item() == pytest.approx(0.2) and bool(chosen > rejected)


def test_spec_cdpo_example():
    losses, _, _ = dpo_loss(**SPEC, beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.6181, abs=5e-5)
    assert losses.item() == pytest.approx(-0.9 * math.log(sig(0.2)) - 0.1 * math.log(sig(-0.2)), rel=1e-6)


def test_spec_ipo_example():
    losses, chosen, _ = dpo_loss(**SPEC, beta=0.1, loss_type="ipo", chosen_lengths=torch.tensor([5]),
                                 rejected_lengths=torch.tensor([4]))
    assert losses.item() == pytest.approx(20.7025, rel=1e-6)  # (1/5 + 1/4 - 5)^2
    assert chosen.item() == pytest.approx(0.1)  # rewards stay the un-normalised beta * h
    # an empty completion counts as one token
    losses, _, _ = dpo_loss(**SPEC, beta=0.1, loss_type="ipo", chosen_lengths=torch.tensor([0]),
                            rejected_lengths=torch.tensor([1]))
    assert losses.item() == pytest.approx((1 + 1 - 5) ** 2, rel=1e-6)


def test_robust_and_hinge_by_hand():
    losses, _, _ = dpo_loss(**SPEC, beta=0.1, loss_type="robust", label_smoothing=0.1)
    by_hand = (-0.9 * math.log(sig(0.2)) + 0.1 * math.log(sig(-0.2))) / 0.8  # 0.573139
    assert losses.item() == pytest.approx(by_hand, rel=1e-6) and by_hand == pytest.approx(0.573139, abs=1e-6)
    losses, _, _ = dpo_loss(**SPEC, beta=0.1, loss_type="robust")  # eps = 0 is plain DPO
    assert losses.item() == pytest.approx(-math.log(sig(0.2)), rel=1e-6)
    losses, _, _ = dpo_loss(t(-10.0, 0.0, -3.0), t(-12.0, -20.0, -1.0), t(-11.0, 0.0, -3.0), t(-11.0, 0.0, -3.0),
                            beta=0.1, loss_type="hinge")
    # beta * Delta = 0.2, 2.0, -0.2 -> max(0, 1 - .)
    torch.testing.assert_close(losses, t(0.8, 0.0, 1.2))


def test_spec_d2po_example_from_per_token_ratios():
    # chosen ratios [0.5, 0.5, 0.5, -0.5], rejected [-0.2, -0.2, 0.4]: weights gamma^1.. per completion
    def h(ratios, gamma):
        return sum(gamma ** (i + 1) * r for i, r in enumerate(ratios))

    cw, cl = [0.5, 0.5, 0.5, -0.5], [-0.2, -0.2, 0.4]
    assert h(cw, 0.98) == pytest.approx(0.9796, abs=5e-5) and h(cl, 0.98) == pytest.approx(-0.0116, abs=5e-5)
    for gamma, want in ((0.98, 0.6448), (1.0, 0.6444)):
        losses, _, _ = dpo_loss(t(h(cw, gamma)), t(h(cl, gamma)), t(0.0), t(0.0), beta=0.1)
        assert losses.item() == pytest.approx(want, abs=5e-5)


# --- model level: logits built to give chosen per-token log-probabilities -----------------------

class Table(nn.Module):
    """Returns fixed logits for fixed input_ids (asserted), with a learnable scale for gradients."""

    def __init__(self, input_ids, logits):
        super().__init__()
        self.input_ids = input_ids
        self.logits = nn.Parameter(logits.clone())

    def forward(self, input_ids):
        assert torch.equal(input_ids, self.input_ids)
        return self.logits


def preference_batch(prompts, chosen, rejected, rows=None, prompt_width=None):
    """A right-padded `preference` batch from lists of id lists (prompt_width: extra padding)."""
    def pad(seqs, width=None):
        width = max([len(s) for s in seqs] + [width or 0, 1])
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = True
        return ids, mask

    batch = {}
    parts = (("prompt", prompts, prompt_width), ("chosen", chosen, None), ("rejected", rejected, None))
    for name, seqs, width in parts:
        batch[f"{name}_ids"], batch[f"{name}_mask"] = pad(seqs, width)
    batch["row"] = torch.arange(len(prompts)) if rows is None else torch.as_tensor(rows)
    return batch


def logits_for(labels, per_token_logps, vocab=7, seed=0):
    """(N, T, vocab) logits whose log-softmax at each completion label is the given value (row by
    row, in completion order); random elsewhere."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*labels.shape, vocab, generator=g, dtype=torch.float64)
    for n in range(labels.shape[0]):
        positions = (labels[n] != IGNORE).nonzero().flatten().tolist()
        assert len(positions) == len(per_token_logps[n])
        for pos, lp in zip(positions, per_token_logps[n]):
            y = int(labels[n, pos])
            others = torch.logsumexp(torch.cat([logits[n, pos, :y], logits[n, pos, y + 1:]]), 0)
            # log p(y) = lp  <=>  l_y = lp + log(sum_{v != y} e^{l_v}) - log(1 - e^{lp})
            logits[n, pos, y] = lp + others - math.log(-math.expm1(lp))
    return logits.float()


D2PO_RATIOS = ([0.5, 0.5, 0.5, -0.5], [-0.2, -0.2, 0.4])


@pytest.mark.parametrize("prompts", [[[1]], [[1, 2, 3, 4, 5]], [[3, 3], [1, 2, 3, 4, 5, 6]]])
@pytest.mark.parametrize("gamma, want", [(0.98, 0.6448), (1.0, 0.6444), (0.5, None)])
def test_d2po_example_through_models(prompts, gamma, want):
    # The spec's per-token log-ratios on every pair, whatever its prompt length; the prompt mask
    # is wider than the longest prompt (padding inside the batch), so the completions start at
    # different positions.
    B = len(prompts)
    batch = preference_batch(prompts, [[2, 3, 4, 5]] * B, [[6, 1, 2]] * B, prompt_width=8)
    input_ids, labels = pair_sequences(batch)
    ref_lp = [[-1.0, -2.0, -0.7, -1.3]] * B + [[-0.9, -1.1, -2.0]] * B
    pol_lp = [[r + d for r, d in zip(row, D2PO_RATIOS[0])] for row in ref_lp[:B]]
    pol_lp += [[r + d for r, d in zip(row, D2PO_RATIOS[1])] for row in ref_lp[B:]]
    policy = Table(input_ids, logits_for(labels, pol_lp, seed=1))
    reference = Table(input_ids, logits_for(labels, ref_lp, seed=2))
    loss, m = DPO(beta=BETA, gamma=gamma)(policy, batch, reference=reference)
    h_w = sum(gamma ** (i + 1) * r for i, r in enumerate(D2PO_RATIOS[0]))
    h_l = sum(gamma ** (i + 1) * r for i, r in enumerate(D2PO_RATIOS[1]))
    assert loss.item() == pytest.approx(-math.log(sig(BETA * (h_w - h_l))), abs=1e-5)
    if want is not None:
        assert loss.item() == pytest.approx(want, abs=5e-5)
    assert m["rewards/chosen"].item() == pytest.approx(BETA * h_w, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(BETA * h_l, abs=1e-6)
    # logps/* are the unweighted policy sums whatever gamma
    assert m["logps/chosen"].item() == pytest.approx(sum(pol_lp[0]), abs=1e-5)
    assert m["logps/rejected"].item() == pytest.approx(sum(pol_lp[B]), abs=1e-5)
    assert m["pairs"].item() == B and m["tokens"].item() == 7 * B


def test_decay_weights_count_from_the_first_completion_token_on_either_padding():
    g = 0.9
    right = torch.tensor([[IGNORE, IGNORE, 5, 6, 7, IGNORE], [IGNORE, 4, 4, IGNORE, IGNORE, IGNORE]])
    left = torch.tensor([[IGNORE, IGNORE, IGNORE, 5, 6, 7], [IGNORE, IGNORE, IGNORE, IGNORE, 4, 4]])
    torch.testing.assert_close(decay_weights(right, g), torch.tensor([[0, 0, g, g**2, g**3, 0], [0, g, g**2, 0, 0, 0]]))
    torch.testing.assert_close(decay_weights(left, g), torch.tensor([[0, 0, 0, g, g**2, g**3], [0, 0, 0, 0, g, g**2]]))
    torch.testing.assert_close(decay_weights(right, 1.0), (right != IGNORE).float())


# --- a tiny Llama: initialisation, a per-pair float64 reference, gradients -------------------------

def tiny_llama(seed=0, std=0.2):
    torch.manual_seed(seed)
    return Llama(vocab_size=V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=64,
                 init_std=std).float()


PAIRS = dict(  # prompts of different lengths, completions of different lengths, one 1-token rejected
    prompts=[[5, 9, 2], [7], [3, 4, 5, 6, 8, 1], [11, 12]],
    chosen=[[20, 21, 22], [30, 31, 32, 33, 34], [40], [50, 51]],
    rejected=[[23, 24], [35], [41, 42, 43, 44], [52, 53, 54, 55, 56, 57]],
)


def pairs_batch(rows=None):
    return preference_batch(PAIRS["prompts"], PAIRS["chosen"], PAIRS["rejected"], rows=rows)


def perturbed(model, seed=1, scale=0.05):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def seq_logp64(model, prompt, completion, gamma=1.0):
    """Per pair, on its own: sum_t gamma^t log p(y_t) in float64 from model(prompt ++ completion)."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids[:, :-1]).double(), -1)[0]
    return sum(gamma ** (k + 1) * lp[len(prompt) - 1 + k, y].item() for k, y in enumerate(completion))


def reference_loss(policy, reference, gamma, loss_type, eps=0.0, free=False):
    """The spec's formulas pair by pair in float64; returns (mean loss, per-pair h_w, h_l)."""
    losses, hw, hl = [], [], []
    for p, c, r in zip(PAIRS["prompts"], PAIRS["chosen"], PAIRS["rejected"]):
        rc = 0.0 if free else seq_logp64(reference, p, c, gamma)
        rr = 0.0 if free else seq_logp64(reference, p, r, gamma)
        h_w, h_l = seq_logp64(policy, p, c, gamma) - rc, seq_logp64(policy, p, r, gamma) - rr
        z = BETA * (h_w - h_l)
        if loss_type == "sigmoid":
            loss = -(1 - eps) * math.log(sig(z)) - eps * math.log(sig(-z))
        elif loss_type == "robust":
            loss = (-(1 - eps) * math.log(sig(z)) + eps * math.log(sig(-z))) / (1 - 2 * eps)
        elif loss_type == "hinge":
            loss = max(0.0, 1 - z)
        else:
            loss = (h_w / len(c) - h_l / len(r) - 1 / (2 * BETA)) ** 2
        losses.append(loss), hw.append(h_w), hl.append(h_l)
    return sum(losses) / len(losses), hw, hl


def test_at_initialisation_every_pair_costs_ln2_with_accuracy_0():
    policy = tiny_llama()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    batch = pairs_batch()
    for i in range(4):  # pair by pair: each loss is ln 2 itself, not only the mean
        one = {k: v[i:i + 1] for k, v in batch.items()}
        loss, m = DPO(beta=BETA)(policy, one, reference=reference)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
        assert m["rewards/margins"].item() == 0 and m["rewards/accuracies"].item() == 0
    loss, m = DPO(beta=BETA, loss_type="hinge")(policy, batch, reference=reference)
    assert loss.item() == 1.0
    loss, m = DPO(beta=BETA, loss_type="ipo")(policy, batch, reference=reference)
    assert loss.item() == pytest.approx((1 / (2 * BETA)) ** 2, rel=1e-6)


@pytest.mark.parametrize("loss_type, eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.3), ("hinge", 0.0),
                                            ("ipo", 0.0)])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_equals_a_per_pair_float64_reference(loss_type, eps, gamma):
    reference = tiny_llama()
    policy = perturbed(reference, scale=0.2 if loss_type == "hinge" else 0.05)
    loss, m = DPO(beta=BETA, loss_type=loss_type, label_smoothing=eps, gamma=gamma)(
        policy, pairs_batch(), reference=reference)
    want, hw, hl = reference_loss(policy, reference, gamma, loss_type, eps)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(BETA * sum(hw) / 4, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(BETA * sum(hl) / 4, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(BETA * (sum(hw) - sum(hl)) / 4, abs=1e-6)
    assert m["rewards/accuracies"].item() == sum(a > b for a, b in zip(hw, hl)) / 4
    plain_w = [seq_logp64(policy, p, c) for p, c in zip(PAIRS["prompts"], PAIRS["chosen"])]
    assert m["logps/chosen"].item() == pytest.approx(sum(plain_w) / 4, rel=1e-5)


def test_gamma_changes_the_loss_and_one_is_plain():
    reference = tiny_llama()
    policy = perturbed(reference)
    batch = pairs_batch()
    plain = reference_loss(policy, reference, 1.0, "sigmoid")[0]
    decayed = reference_loss(policy, reference, 0.5, "sigmoid")[0]
    assert abs(plain - decayed) > 1e-3  # the check below can tell them apart
    assert DPO(gamma=1.0)(policy, batch, reference=reference)[0].item() == pytest.approx(plain, rel=1e-5)
    assert DPO(gamma=0.5)(policy, batch, reference=reference)[0].item() == pytest.approx(decayed, rel=1e-5)


def test_gradient_is_the_analytic_dpo_gradient():
    # dL/dtheta = -(beta / B) sum_i sigma(-beta Delta_i) (grad log pi(y_w,i) - grad log pi(y_l,i)),
    # the log-probabilities taken pair by pair from separate forwards (no padding, no helper).
    reference = tiny_llama()
    policy = perturbed(reference, scale=0.1)
    loss, _ = DPO(beta=BETA)(policy, pairs_batch(), reference=reference)
    got = torch.autograd.grad(loss, list(policy.parameters()))
    _, hw, hl = reference_loss(policy, reference, 1.0, "sigmoid")
    surrogate = 0.0
    for i, (p, c, r) in enumerate(zip(PAIRS["prompts"], PAIRS["chosen"], PAIRS["rejected"])):
        weight = -BETA * sig(-BETA * (hw[i] - hl[i])) / 4

        def logp(completion):
            ids = torch.tensor([p + completion])
            lp = torch.log_softmax(policy(ids[:, :-1]).double(), -1)[0]
            return sum(lp[len(p) - 1 + k, y] for k, y in enumerate(completion))

        surrogate = surrogate + weight * (logp(c) - logp(r))
    want = torch.autograd.grad(surrogate, list(policy.parameters()))
    assert sum(w.abs().sum() for w in want) > 1e-3
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-7, rtol=1e-4)
    # nothing reaches the reference
    assert all(p.grad is None for p in reference.parameters())


# --- the reference: precomputed, free, missing ---------------------------------------------------

@pytest.mark.parametrize("gamma, loss_type", [(1.0, "sigmoid"), (0.9, "ipo")])
def test_precomputed_reference_equals_the_live_one(gamma, loss_type):
    reference = tiny_llama()
    policy = perturbed(reference)
    objective = DPO(beta=BETA, gamma=gamma, loss_type=loss_type)
    # the table: reference_outputs over the whole data (rows 0..3 in order), one pair at a time
    rows = []
    for i in range(4):
        one = preference_batch([PAIRS["prompts"][i]], [PAIRS["chosen"][i]], [PAIRS["rejected"][i]], rows=[i])
        with torch.no_grad():
            rows.append(objective.reference_outputs(reference, one))
    table = Precomputed(torch.cat(rows))
    assert table.table.shape == (4, 2) and table.table.dtype == torch.float32
    order = [2, 0, 3, 1]
    batch = {k: v[order] for k, v in pairs_batch().items()}
    live_loss, live = objective(policy, batch, reference=reference)
    pre_loss, pre = objective(policy, batch, reference=table)
    torch.testing.assert_close(pre_loss, live_loss, atol=1e-6, rtol=1e-6)
    assert live.keys() == pre.keys()
    for key in live:
        torch.testing.assert_close(pre[key], live[key], atol=1e-6, rtol=1e-6)


def test_reference_free_equals_a_zero_reference():
    policy = tiny_llama()
    batch = pairs_batch()
    free_loss, free = DPO(beta=BETA, reference_free=True)(policy, batch)
    zero_loss, zero = DPO(beta=BETA)(policy, batch, reference=Precomputed(torch.zeros(4, 2)))
    assert free_loss.item() == zero_loss.item() and free_loss.item() != pytest.approx(math.log(2))
    assert all(torch.equal(free[k], zero[k]) for k in free)
    want = reference_loss(policy, None, 1.0, "sigmoid", free=True)[0]
    assert free_loss.item() == pytest.approx(want, rel=1e-5)


def test_reference_errors():
    policy = tiny_llama()
    batch = pairs_batch()
    with pytest.raises(ValueError, match=r"objective\.models\.reference"):
        DPO()(policy, batch)
    with pytest.raises(ValueError, match="reference_free=True takes no reference"):
        DPO(reference_free=True)(policy, batch, reference=copy.deepcopy(policy))
    with pytest.raises(ValueError, match="outside the precomputed table"):
        DPO()(policy, pairs_batch(rows=[0, 1, 2, 9]), reference=Precomputed(torch.zeros(4, 2)))


# --- metrics, evaluate -------------------------------------------------------------------------------

def test_metrics_are_detached_scalars_and_evaluate_matches():
    reference = tiny_llama()
    policy = perturbed(reference)
    batch = pairs_batch()
    objective = DPO(beta=BETA)
    loss, m = objective(policy, batch, reference=reference)
    assert loss.requires_grad and loss.dim() == 0
    assert set(m) == {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                      "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "pairs", "tokens"}
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())
    assert m["pairs"].item() == 4
    assert m["tokens"].item() == sum(len(c) + len(r) for c, r in zip(PAIRS["chosen"], PAIRS["rejected"]))
    # logits/*: the vocab-mean logit over every completion token of the batch (token-level)
    input_ids, labels = pair_sequences(batch)
    with torch.no_grad():
        means = policy(input_ids).mean(-1)
    mask = labels != IGNORE
    assert m["logits/chosen"].item() == pytest.approx((means[:4][mask[:4]]).mean().item(), rel=1e-5)
    assert m["logits/rejected"].item() == pytest.approx((means[4:][mask[4:]]).mean().item(), rel=1e-5)
    e_loss, e = objective.evaluate(policy, batch, reference=reference)
    assert not e_loss.requires_grad and e_loss.item() == loss.item()
    assert all(torch.equal(e[k], m[k]) for k in m)


def test_no_pairs_gives_a_zero_loss_on_the_graph():
    batch = preference_batch([], [], [])
    weight = nn.Parameter(torch.ones(()))
    loss, m = DPO(reference_free=True)(lambda ids: weight * torch.zeros(*ids.shape, 5), batch)
    loss.backward()
    assert loss.item() == 0 and weight.grad is not None and m["pairs"].item() == 0 and m["tokens"].item() == 0


# --- TRL 1.16 -------------------------------------------------------------------------------------------

TRL_EXAMPLES = [  # already tokenized; lengths differ so token-level and per-sequence means differ
    {"prompt_ids": [2, 3, 4], "chosen_ids": [5, 6], "rejected_ids": [7]},
    {"prompt_ids": [8], "chosen_ids": [9, 10, 11, 12, 13, 14], "rejected_ids": [15, 16]},
    {"prompt_ids": [17, 18, 19, 20, 21], "chosen_ids": [22], "rejected_ids": [23, 24, 25, 26]},
    {"prompt_ids": [27, 28], "chosen_ids": [29, 30, 31], "rejected_ids": [32, 33, 34]},
]


def hf_llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        initializer_range=0.2, attention_dropout=0.0, pad_token_id=0, eos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return transformers.LlamaForCausalLM(config).float()


def trl_step(policy_hf, ref_hf, tmp_path, **dpo):
    """TRL's loss and logged metrics for TRL_EXAMPLES: a DPOTrainer (CPU, fp32, no precompute)
    whose `compute_loss` runs on the batch its own collator builds from the tokenized pairs."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from trl import DPOConfig, DPOTrainer

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, V)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")
    # The trainer needs a text dataset to start; the compared batch is TRL_EXAMPLES, collated by it.
    data = Dataset.from_dict({"prompt": ["w2 w3"], "chosen": [" w4"], "rejected": [" w5"]})
    args = DPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], disable_dropout=True,
                     precompute_ref_log_probs=False, per_device_train_batch_size=len(TRL_EXAMPLES),
                     max_length=None, **dpo)
    trainer = DPOTrainer(model=policy_hf, ref_model=ref_hf, args=args, train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator(TRL_EXAMPLES)
    assert batch["input_ids"][:, -1].eq(0).any()  # right padding, no EOS appended to pre-tokenized ids
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), logged, batch


@pytest.mark.parametrize("loss_type, eps", [("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.2), ("hinge", 0.0)])
def test_matches_trl_dpo_trainer(tmp_path, loss_type, eps):
    ref_hf = hf_llama().eval()
    policy_hf = copy.deepcopy(ref_hf)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in policy_hf.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))

    def ours_of(hf):
        with torch.device("meta"):
            model = Llama(vocab_size=V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=64,
                          rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False)
        model.reset_buffers("cpu")
        return from_hf_state_dict(model, {k: v.detach().clone() for k, v in hf.state_dict().items()})

    policy, reference = ours_of(policy_hf), ours_of(ref_hf).eval().requires_grad_(False)
    batch = preference_batch([e["prompt_ids"] for e in TRL_EXAMPLES], [e["chosen_ids"] for e in TRL_EXAMPLES],
                             [e["rejected_ids"] for e in TRL_EXAMPLES])
    loss, m = DPO(beta=BETA, loss_type=loss_type, label_smoothing=eps)(policy, batch, reference=reference)

    trl_loss, logged, trl_batch = trl_step(policy_hf, ref_hf, tmp_path, beta=BETA, loss_type=[loss_type],
                                           label_smoothing=eps)
    # both saw the same token sequences and the same completion positions
    ids, labels = pair_sequences(batch)
    L = ids.shape[1] + 1
    assert torch.equal(trl_batch["input_ids"][:, :L - 1], ids)
    assert torch.equal(trl_batch["completion_mask"][:, 1:L].bool(), labels != IGNORE)
    assert loss.item() == pytest.approx(trl_loss, abs=1e-5)
    keys = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected", "logits/chosen", "logits/rejected"]
    for key in keys:
        assert m[key].item() == pytest.approx(logged[key], abs=1e-5), key
    assert 0 < logged["rewards/accuracies"] < 1  # a mixed batch: the strict > is exercised
    assert m["tokens"].item() == int(trl_batch["completion_mask"].sum())


# --- arguments, config, spec ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"beta": 0}, "beta=0 is not allowed: it must be > 0"),
    ({"beta": True}, "beta=True is not allowed: it must be a number"),
    ({"loss_type": "kto"}, "loss_type='kto' is not allowed: allowed are 'sigmoid', 'robust', 'hinge', 'ipo'"),
    ({"label_smoothing": 0.6}, r"label_smoothing=0.6 is not allowed with loss_type='sigmoid' \(cDPO\)"),
    ({"loss_type": "robust", "label_smoothing": 0.5}, r"must be in \[0, 0.5\)"),
    ({"loss_type": "ipo", "label_smoothing": 0.1}, "has no effect with loss_type='ipo'"),
    ({"gamma": 0}, r"gamma=0 is not allowed: it must be in \(0, 1\]"),
    ({"gamma": 1.01}, r"gamma=1.01 is not allowed"),
    ({"reference_free": 1}, "reference_free=1 is not allowed: it must be true or false"),
    ({"pad_id": -1}, "pad_id=-1 is not allowed"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPO(**kwargs)


def test_class_attributes_are_plain_literals_read_by_ast():
    tree = ast.parse(Path(dpo_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DPO")
    attrs = {s.targets[0].id: ast.literal_eval(s.value) for s in cls.body
             if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)}
    assert attrs == {"batch_kind": "preference", "extra_models": ("reference",)}


def test_yaml_defaults_match_the_signature():
    import inspect

    node = yaml.safe_load((REPO / "conf/objective/dpo.yaml").read_text())
    assert node.pop("_target_") == "rizzrun.objectives.dpo.DPO"
    assert node.pop("models") == {"reference": "init"} and node.pop("precompute") == []
    params = inspect.signature(DPO).parameters
    assert {k: params[k].default for k in node} == node
    assert dpo_spec.check({**node, "models": {"reference": "init"}, "precompute": []}, "objective") == []
    assert spec_of("rizzrun.objectives.dpo.DPO") is dpo_spec


@pytest.mark.parametrize("node, problems", [
    ({"loss_type": "robust", "label_smoothing": 0.5, "models": {"reference": "init"}},
     ["objective.label_smoothing=0.5: robust DPO divides by 1 - 2 * label_smoothing; allowed with "
      "objective.loss_type='robust': 0 <= label_smoothing < 0.5"]),
    ({"loss_type": "hinge", "label_smoothing": 0.1, "models": {"reference": "init"}},
     ["objective.label_smoothing=0.1: has no effect with loss_type='hinge'; allowed: 0 (label smoothing applies "
      "to 'sigmoid' (cDPO) and 'robust')"]),
    ({"reference_free": True, "models": {"reference": "init"}, "precompute": ["reference"]},
     ["objective.models.reference='init': reference_free=true uses no reference; set objective.models.reference=null, "
      "or objective.reference_free=false",
      "objective.precompute=['reference']: reference_free=true has no reference to precompute; remove 'reference' "
      "from objective.precompute"]),
    ({"reference_free": False, "models": {"reference": None}},
     ["objective.models.reference=null: DPO needs a reference model (reference_free=false); allowed: "
      "objective.models.reference=init (the policy's starting weights) or a run or Hugging Face folder, or "
      "objective.reference_free=true"]),
    ({"models": {}}, None),  # no reference key at all is null too
    ({"reference_free": True, "models": {"reference": None}, "precompute": []}, []),
    ({"models": {"reference": "/runs/sft"}, "precompute": ["reference"]}, []),
])
def test_spec_check(node, problems):
    found = dpo_spec.check(node, "objective")
    if problems is None:
        assert len(found) == 1 and found[0].startswith("objective.models.reference=null")
    else:
        assert found == problems


def test_rpo_adds_the_chosen_completions_nll():
    """rpo_alpha (TRL <= 0.28, RPO arXiv 2404.19733): DPO's loss + alpha * the token-mean cross-entropy
    of the chosen completions, computed here by rizzrun's plain CrossEntropy on prompt + chosen."""
    from rizzrun.objectives.ce import CrossEntropy
    from rizzrun.objectives.preference import join

    reference = tiny_llama()
    policy = perturbed(reference)
    batch = pairs_batch()
    plain, _ = DPO()(policy, batch, reference=reference)
    loss, metrics = DPO(rpo_alpha=0.5)(policy, batch, reference=reference)
    ids, labels = join(batch["prompt_ids"], batch["prompt_mask"], batch["chosen_ids"], batch["chosen_mask"])
    nll, _ = CrossEntropy()(policy, {"input_ids": ids, "labels": labels})
    assert torch.allclose(metrics["nll_loss"], nll.detach(), rtol=1e-5)
    assert torch.allclose(loss, plain + 0.5 * nll, rtol=1e-5)
    with pytest.raises(ValueError, match=r"^rpo_alpha=0 is not allowed: it must be > 0, or null"):
        DPO(rpo_alpha=0)
