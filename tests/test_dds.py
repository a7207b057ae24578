"""Dynamic stochastic decoding (DDS, arXiv 2406.07850): mappings, decoder equivalences (constant
score == fixed-temperature sampling, tiny T == greedy), token-level causality, the label function,
head training, the sampling statistics, and a real run that trains the head and decodes with it."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sampling_checks import chi2_pvalue, draw_counts

from rizzrun.data.contexts import DiversityLabels, write_label_rows
from rizzrun.data.dialogue import DialogueContexts, dialogue_examples, fact_answer
from rizzrun.decoders.dynamic_temperature import (GREEDY_BELOW, DiversityHead, DynamicTemperature, head_from_state,
                                                  pool_prompt, temperature_of)
from rizzrun.decoders.greedy import Greedy
from rizzrun.decoders.sample import Sample
from rizzrun.errors import InputError
from rizzrun.eval.diversity import bigram_jaccard, distinct_n, diversity_label, label_contexts, rouge_l
from rizzrun.models.llama import Llama
from rizzrun.objectives.diversity import DiversityRegression, predicting_positions
from rizzrun.tokenizers.byte import ByteTokenizer

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = ("linear", "exponential", "inverse_sigmoid")


def tiny_llama(seed=0, vocab=32, d_model=16):
    torch.manual_seed(seed)
    return Llama(vocab_size=vocab, d_model=d_model, n_layer=1, n_head=2, d_ff=32, max_seq_len=64).eval()


def constant_head(d: float, width: int = 16) -> DiversityHead:
    """A DiversityHead whose output is d for every input (zero last layer, bias logit(d))."""
    head = DiversityHead(width)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.fill_(math.log(d / (1 - d)))
    return head


def random_head(seed: int, width: int = 16) -> DiversityHead:
    torch.manual_seed(seed)
    head = DiversityHead(width)
    with torch.no_grad():
        head.out.weight.mul_(8.0)  # spread d over (0, 1), so that temperatures differ per state
    return head


# --- mappings -------------------------------------------------------------------------------------

def test_mappings_endpoints_match_the_formulas_by_hand():
    # linear and exponential hit t_min and t_max exactly
    for mapping in ("linear", "exponential"):
        t = temperature_of(torch.tensor([0.0, 1.0]), mapping, 0.1, 1.5)
        assert t.tolist() == pytest.approx([0.1, 1.5], abs=1e-6)
    # the inverse sigmoid misses them by (t_max - t_min) sigmoid(-k/2) (the spec's 0.109 / 1.491)
    low = 0.1 + 1.4 / (1 + math.exp(5))
    t = temperature_of(torch.tensor([0.0, 0.5, 1.0]), "inverse_sigmoid", 0.1, 1.5, k=10)
    assert t.tolist() == pytest.approx([low, 0.8, 1.6 - low], abs=1e-6)
    assert round(t[0].item(), 3) == 0.109 and round(t[2].item(), 3) == 1.491
    # interior points, each formula evaluated in double here
    d = 0.3
    assert temperature_of(d, "linear", 0.2, 2.0).item() == pytest.approx(0.2 + 1.8 * d, rel=1e-6)
    assert temperature_of(d, "exponential", 0.2, 2.0).item() == pytest.approx(0.2 * 10 ** d, rel=1e-6)
    assert temperature_of(d, "inverse_sigmoid", 0.2, 2.0, k=4).item() == pytest.approx(
        0.2 + 1.8 / (1 + math.exp(-4 * (d - 0.5))), rel=1e-6)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_mappings_are_monotone_bounded_and_vectorised(mapping):
    d = torch.linspace(0, 1, 201)
    t = temperature_of(d, mapping, 0.1, 1.5)
    assert t.shape == d.shape and bool((t[1:] > t[:-1]).all())
    assert bool((t >= 0.1 - 1e-7).all() and (t <= 1.5 + 1e-6).all())
    grid = d.reshape(3, 67)  # any shape, element by element
    assert torch.equal(temperature_of(grid, mapping, 0.1, 1.5), t.reshape(3, 67))


@pytest.mark.parametrize("kwargs, needle", [
    ({"t_min": 1.5, "t_max": 0.1}, "t_min=1.5, t_max=0.1"),
    ({"t_min": 0.0}, "t_min=0.0"),
    ({"mapping": "cubic"}, "mapping='cubic'"),
    ({"granularity": "word"}, "granularity='word'"),
    ({"score": 1.5}, "score=1.5"),
    ({"head": "/no/such/run"}, "head='/no/such/run'"),
    ({"head": 3}, "head=3"),
])
def test_bad_knobs_name_the_key(kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle.replace(".", r"\.").replace("(", r"\(")):
        DynamicTemperature(**kwargs)


# --- decoder equivalences (decoders README 2, 4) -----------------------------------------------------

@pytest.mark.parametrize("mapping, d", [("linear", 0.0), ("exponential", 0.7), ("inverse_sigmoid", 1.0)])
def test_constant_score_is_sampling_at_the_mapped_temperature(mapping, d):
    model, prompts = tiny_llama(), torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(1))
    knobs = dict(max_new_tokens=12, seed=7, top_p=0.9, repetition_penalty=1.3)
    dds = DynamicTemperature(mapping=mapping, score=d, **knobs)
    t = float(dds.temperature_for(d))
    assert torch.equal(dds.generate(model, prompts), Sample(temperature=t, **knobs).generate(model, prompts))
    assert dds.last_temperatures.flatten().tolist() == [pytest.approx(t)] * 3


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_a_head_with_constant_output_is_sampling_at_its_temperature(granularity):
    """Through the hidden-state path (DDSStepper): every row and step gets T(d), and the tokens are
    those of Sample at that temperature with the same seed, left-padded prompts included."""
    model = tiny_llama()
    prompts = [[3, 4, 5, 6], [7, 8], [9, 10, 11]]
    knobs = dict(max_new_tokens=10, seed=3, top_k=8, repetition_penalty=1.2)
    dds = DynamicTemperature(granularity=granularity, head=constant_head(0.4), **knobs)
    out = dds.generate(model, prompts)
    temps = dds.last_temperatures
    assert temps.shape == (3, 1 if granularity == "sequence" else out.shape[1] - 4)
    t = float(temps[0, 0])
    assert t == pytest.approx(0.1 + 1.4 * 0.4, rel=1e-5) and bool((temps == t).all())
    assert torch.equal(out, Sample(temperature=t, **knobs).generate(model, prompts))


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_tiny_temperature_is_greedy(granularity):
    model, prompts = tiny_llama(seed=2), torch.randint(0, 32, (4, 6), generator=torch.Generator().manual_seed(2))
    greedy = Greedy(max_new_tokens=15).generate(model, prompts)
    # a constant score of 0 at t_min = 1e-6, and a head whose d is ~0 everywhere
    assert torch.equal(DynamicTemperature(t_min=1e-6, score=0.0, max_new_tokens=15, seed=0).generate(model, prompts),
                       greedy)
    dds = DynamicTemperature(granularity=granularity, t_min=1e-6, head=constant_head(1e-4), max_new_tokens=15, seed=0)
    assert torch.equal(dds.generate(model, prompts), greedy)
    assert bool((dds.last_temperatures < GREEDY_BELOW).all())


def test_low_but_not_tiny_temperature_still_samples():
    """Above GREEDY_BELOW the draw is a real draw: at T = 2 over a flat model the tokens differ from greedy."""
    model, prompts = tiny_llama(seed=2), torch.randint(0, 32, (4, 6), generator=torch.Generator().manual_seed(2))
    greedy = Greedy(max_new_tokens=15).generate(model, prompts)
    assert not torch.equal(DynamicTemperature(t_min=0.5, t_max=2.0, score=1.0, max_new_tokens=15, seed=0)
                           .generate(model, prompts), greedy)


# --- what the head reads (no leakage; decoders README 4) -----------------------------------------------

def recomputed_temperatures(model, head, ids, prompt_len, mapping="linear"):
    """T of each generated position p >= prompt_len from scratch: head(h at p - 1) of a full forward
    over ids[:, :p] (no cache)."""
    out = []
    for p in range(prompt_len, ids.shape[1]):
        with torch.no_grad():
            h = model.hidden_states(ids[:, :p])[:, -1]
        out.append(temperature_of(head(h), mapping))
    return torch.stack(out, dim=1)


def test_token_level_temperatures_are_those_of_the_prefix_before_each_token():
    model, head = tiny_llama(seed=4), random_head(5)
    prompts = torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(4))
    dds = DynamicTemperature(granularity="token", head=head, max_new_tokens=12, seed=1)
    out = dds.generate(model, prompts)
    expected = recomputed_temperatures(model, head, out, 5)
    assert torch.allclose(dds.last_temperatures, expected, atol=1e-5)
    assert float(dds.last_temperatures.std()) > 0.05  # they do vary from step to step

    # perturb the token at position t: T up to and including t's is unchanged, t + 1's changes
    t = 9
    changed = out.clone()
    changed[:, t] = (changed[:, t] + 1) % 32
    after = recomputed_temperatures(model, head, changed, 5)
    k = t - 5  # the index of position t's temperature
    assert torch.equal(after[:, :k + 1], expected[:, :k + 1])
    assert not torch.allclose(after[:, k + 1], expected[:, k + 1])


def test_sequence_level_pools_the_real_prompt_tokens_only():
    model, head = tiny_llama(seed=6), random_head(7)
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    dds = DynamicTemperature(granularity="sequence", head=head, max_new_tokens=3, seed=0)
    dds.generate(model, prompts)  # left-padded to 5
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            h = model.hidden_states(torch.tensor([prompt])).mean(dim=1)
        assert dds.last_temperatures[row, 0].item() == pytest.approx(temperature_of(head(h), "linear").item(),
                                                                     abs=1e-5)


def test_pool_prompt_and_head_shapes():
    hidden = torch.arange(24.0).reshape(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, True]])
    assert torch.equal(pool_prompt(hidden, mask), torch.stack([hidden[0, :2].mean(0), hidden[1, 2]]))
    head = DiversityHead(4, hidden=6)
    d = head(torch.randn(5, 7, 4))
    assert d.shape == (5, 7) and d.dtype == torch.float32 and bool(((d > 0) & (d < 1)).all())
    saved = {f"objective.head.{k}": v for k, v in head.state_dict().items()}  # a checkpoint's keys
    assert torch.equal(head_from_state(saved)(hidden), head(hidden))
    with pytest.raises(ValueError, match="width 4"):
        head(torch.randn(2, 5))


# --- sampling statistics (decoders README 7) -------------------------------------------------------

@pytest.mark.parametrize("mapping, d, top_p", [("linear", 0.2, 1.0), ("exponential", 0.9, 1.0),
                                                ("inverse_sigmoid", 0.6, 0.8)])
def test_draws_match_the_tempered_distribution(mapping, d, top_p):
    scores = torch.randn(1, 12, generator=torch.Generator().manual_seed(3)) * 2
    dds = DynamicTemperature(mapping=mapping, score=d, top_p=top_p)
    t = float(dds.temperature_for(d))
    probs = torch.softmax(Sample(temperature=t, top_p=top_p).warp(scores), -1)[0]
    counts = draw_counts(dds.choose, scores, 20000)
    assert chi2_pvalue(counts, probs) > 1e-3
    # and not the untempered distribution (the test can fail)
    assert chi2_pvalue(counts, torch.softmax(Sample(top_p=top_p).warp(scores), -1)[0]) < 1e-6


def test_cold_rows_draw_only_the_argmax():
    scores = torch.randn(1, 10, generator=torch.Generator().manual_seed(0))
    counts = draw_counts(DynamicTemperature(t_min=1e-5, score=0.0).choose, scores, 500)
    assert counts[scores.argmax()] == 500


# --- the label -------------------------------------------------------------------------------------------

def test_label_function_by_hand():
    for sim in ("rouge_l", "bigram_jaccard"):
        assert diversity_label(["a b c", "a b c", "a b c"], sim) == 0.0
        assert diversity_label(["a b", "c d", "e"], sim) == 1.0
    assert rouge_l("the cat sat", "the cat ran") == pytest.approx(2 / 3)  # LCS 2, P = R = 2/3
    assert rouge_l("a b c d", "b d") == pytest.approx(2 * 0.5 * 1 / 1.5)  # LCS 2, P = 1/2, R = 1
    # <s> the, the cat, cat sat, sat </s> vs <s> the, the cat, cat ran, ran </s>: 2 shared of 6
    assert bigram_jaccard("the cat sat", "the cat ran") == pytest.approx(1 / 3)
    assert diversity_label(["the cat sat", "the cat ran", "the cat sat"]) == pytest.approx(1 - (2 / 3 + 1 + 2 / 3) / 3)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # ab, ba, ab + ab: 2 distinct of 4
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # ab, bc + ab, bd
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="at least 2"):
        diversity_label(["one"])


def test_sampled_proxy_labels_round_trip_through_a_label_file(tmp_path):
    model, tok = tiny_llama(vocab=258, d_model=16), ByteTokenizer()
    rows = label_contexts(model, tok, ["Q: 1+1? A:", "Q: tell me about rain. A:"], n=4, max_new_tokens=6, seed=0)
    assert [r["text"] for r in rows] == ["Q: 1+1? A:", "Q: tell me about rain. A:"]
    for r in rows:
        assert 0 <= r["diversity"] <= 1 and len(r["replies"]) == 4
        assert r["diversity"] == pytest.approx(diversity_label(r["replies"]))
    path = write_label_rows(tmp_path / "labels.jsonl", rows)
    data = DiversityLabels(str(path), val_fraction=0.0, batch_size=2)
    data.setup(tok)
    batch = next(data.train_batches())
    assert sorted(batch["diversity"].tolist()) == pytest.approx(sorted(r["diversity"] for r in rows))
    # out-of-range labels: refused unless normalized (min-max over the training split)
    path.write_text('{"text": "a", "diversity": 3}\n{"text": "b", "diversity": 5}\n')
    with pytest.raises(InputError, match="must be in \\[0, 1\\]"):
        DiversityLabels(str(path), val_fraction=0.0).setup(tok)
    normed = DiversityLabels(str(path), val_fraction=0.0, normalize=True)
    normed.setup(tok)
    assert normed.labels("train") == [0.0, 1.0]


# --- data and objective ----------------------------------------------------------------------------------

def test_dialogue_contexts_batches():
    data = DialogueContexts(n_train=20, n_val=6, batch_size=8)
    data.setup(ByteTokenizer())
    batch = next(data.train_batches())
    rows = data.rows("train")
    for j, i in enumerate(batch["row"].tolist()):
        context, reply, d = rows[i]
        ids = batch["input_ids"][j]
        p, r = batch["prompt_mask"][j], batch["reply_mask"][j]
        assert ids[p].tolist() == [257, *context.encode()] and ids[r].tolist() == [*reply.encode(), 257]
        assert d == (0.0 if context.endswith("? A:") and "+" in context else 1.0) == batch["diversity"][j].item()
    # fact replies are the one right answer
    assert all(r == fact_answer(p) for kind, p, r in dialogue_examples(50) if kind == "fact")
    # resuming at batch i gives batch i
    third = [b["row"] for _, b in zip(range(3), data.train_batches())][2]
    assert torch.equal(next(data.train_batches(start=2))["row"], third)
    assert sum(b["row"].numel() for b in data.val_batches()) == 6


def test_predicting_positions():
    prompt = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    reply = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert predicting_positions(prompt, reply).int().tolist() == [[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]]


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def test_head_training_separates_fact_from_chat():
    """The spec's test 6: on the synthetic fact-vs-chat contexts, a head on a frozen random tiny
    model reaches AUC > 0.95 on held-out contexts at both levels; the backbone is left exactly as
    it was (no gradient, so AdamW's weight decay does not touch it either)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits (10x slower on a busy 2-core box)
    try:
        _train_head_and_check()
    finally:
        torch.set_num_threads(threads)


def _train_head_and_check():
    tok = ByteTokenizer()
    data = DialogueContexts(n_train=64, n_val=64, batch_size=64)
    data.setup(tok)
    model = tiny_llama(seed=0, vocab=258, d_model=32).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj = DiversityRegression(d_model=32, granularity="both")
    opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-2, weight_decay=0.1)
    val = next(data.val_batches())  # all 64
    with torch.no_grad():
        start, _ = obj(model, val)
    for batch, _ in zip(data.train_batches(), range(30)):
        loss, metrics = obj(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        end, metrics = obj(model, val)
        scores = obj.scores(model, val)
    # token level: the state the decoder reads for the first reply token, the context's last position
    last = val["prompt_mask"].long().cumsum(1).argmax(1)
    assert auc(scores["sequence"], val["diversity"]) > 0.95
    assert auc(scores["token"][torch.arange(64), last], val["diversity"]) > 0.95
    assert end < 0.5 * start and metrics["accuracy"] > 0.9 and metrics["contexts"] == 64


def test_unfrozen_backbone_gets_gradients():
    tok = ByteTokenizer()
    data = DialogueContexts(n_train=8, n_val=0, batch_size=8)
    data.setup(tok)
    model = tiny_llama(seed=0, vocab=258, d_model=16).train()
    objective = DiversityRegression(d_model=16, granularity="both", freeze_backbone=False)
    loss, _ = objective(model, next(data.train_batches()))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "d_model=None"), ({"d_model": 4, "granularity": "x"}, "granularity='x'"),
    ({"d_model": 4, "freeze_backbone": 1}, "freeze_backbone=1"), ({"d_model": 4, "hidden": 0}, "hidden=0")])
def test_objective_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle):
        DiversityRegression(**kwargs)


# --- configs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("group, option, cls", [("decoder", "dynamic_temperature", DynamicTemperature),
                                                ("objective", "dds_head", DiversityRegression)])
def test_yaml_defaults_match_the_signature(group, option, cls):
    node = OmegaConf.load(REPO / "conf" / group / f"{option}.yaml")
    params = inspect.signature(cls).parameters
    assert set(node) - {"_target_"} == set(params)
    for name, p in params.items():
        assert node[name] == p.default, name


def test_decoder_option_generates_with_its_defaults_on_any_model():
    from rizzrun.runner.build import build_decoder

    dec = build_decoder(OmegaConf.load(REPO / "conf" / "decoder" / "dynamic_temperature.yaml"))
    out = dec.generate(tiny_llama(), torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    assert out.shape == (1, 8) and dec.last_temperatures.tolist() == [[pytest.approx(0.8)]]


def test_config_validation():
    from rizzrun.config import ConfigError, load

    with pytest.raises(ConfigError, match="decoder.t_min=2.0: must be < decoder.t_max=1.5"):
        load(["decoder=dynamic_temperature", "decoder.t_min=2.0"])
    with pytest.raises(ConfigError, match="decoder.score=2"):
        load(["decoder=dynamic_temperature", "decoder.score=2"])
    with pytest.raises(ConfigError, match="consumes batch_kind 'diversity'"):
        load(["objective=dds_head"])
    cfg = load(["objective=dds_head", "data=dialogue_contexts", "decoder=dynamic_temperature"])
    assert cfg.data.batch_size == 32


def test_runner_weights_diversity_metrics_by_contexts():
    from rizzrun.runner.task import COUNT_KEYS, batch_weight_key

    assert batch_weight_key("diversity") == "contexts" and "contexts" in COUNT_KEYS
    assert batch_weight_key("preference") == "pairs" and batch_weight_key("lm") == "tokens"


# --- a real run: the LM, then the head, then decoding with the head ------------------------------------------

MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=2", "model.d_ff=64",
         "model.max_seq_len=64", "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler.warmup_steps=1",
         "trainer.samples_per_val=1", "prompts=['Q: 3+4? A:']", "decoder.max_new_tokens=4"]


def test_head_trains_in_a_run_and_decodes_from_its_folder(tmp_path, shared_cache):
    from rizzrun import layout
    from rizzrun.config import load
    from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_weights
    from rizzrun.runner.generate import generate_from_run, load_run, objective_weights
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    lm = tmp_path / "lm"
    assert run(load([*MODEL, f"cache_dir={shared_cache}", "data=dialogue_sft", "data.n_train=64", "data.n_val=8",
                     "data.batch_size=4", "trainer.max_steps=2", "trainer.val_every=2", "decoder=greedy"]),
               lm)["status"] == "completed"
    head_run = tmp_path / "head"
    summary = run(load([*MODEL, f"cache_dir={shared_cache}", "objective=dds_head", "data=dialogue_contexts",
                        "data.n_train=16", "data.n_val=8", "data.batch_size=8", "trainer.max_steps=3",
                        "trainer.val_every=3", f"model.from_pretrained={lm}", "decoder=dynamic_temperature",
                        "optimizer.lr=1e-2"]), head_run)
    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])
    rows = read_metrics(head_run / layout.METRICS)
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == 3 and all(r["train/contexts"] == 8 for r in train_rows)
    assert {"train/mse/sequence", "train/mse/token", "train/accuracy"} <= set(train_rows[0])
    assert any(r.get("val/contexts") == 8 for r in rows)
    # the backbone is the LM's, bit for bit; the head is in the checkpoint's objective state
    a, b = load_weights(latest_checkpoint(lm) / WEIGHTS), load_weights(latest_checkpoint(head_run) / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = objective_weights(latest_checkpoint(head_run))
    assert set(state) == {"head.proj.weight", "head.proj.bias", "head.out.weight", "head.out.bias"}

    # decoding with decoder.head=RUN_DIR: the temperatures are the loaded head's, recomputed by hand
    _, tok, model = load_run(lm)
    head = head_from_state(state)
    ids = torch.tensor([[tok.eos_id, *tok.encode("Q: 3+4? A:")]])
    for granularity in ("sequence", "token"):
        dds = DynamicTemperature(granularity=granularity, head=str(head_run), max_new_tokens=4, seed=0)
        out = dds.generate(model, ids)
        if granularity == "token":
            expected = recomputed_temperatures(model, head, out, ids.shape[1])
        else:
            with torch.no_grad():
                expected = temperature_of(head(model.hidden_states(ids).mean(1)), "linear")[:, None]
        assert torch.allclose(dds.last_temperatures, expected, atol=1e-5)
    text = generate_from_run(head_run, "Q: 3+4? A:", decoder="dynamic_temperature", head=str(head_run),
                             granularity="token", seed=0, max_new_tokens=4)
    assert text.startswith("Q: 3+4? A:")
    # a folder whose objective trained no head, and a granularity the head was not trained at
    with pytest.raises(ValueError, match="trains no diversity head"):
        DynamicTemperature(head=str(lm), max_new_tokens=2).generate(model, ids)
    cfg = OmegaConf.load(head_run / layout.CONFIG)
    cfg.objective.granularity = "sequence"
    (head_run / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ValueError, match="trained at granularity 'sequence' only"):
        DynamicTemperature(granularity="token", head=str(head_run), max_new_tokens=2).generate(model, ids)
    json.dumps(DynamicTemperature(head=str(head_run)).settings())  # the knobs stay plain values
