"""PMPD (Chen et al., arXiv 2410.13461) and its nested quantisation (uniform Any-Precision, arXiv
2402.10517): hand-derived codes and bucket centres, the prefix property and bucket nesting for every
weight, error monotone in bits, the 8-bit model against fp32; the neutral schedules against Greedy
on a k-bit copy of the model and against a from-scratch reference that computes every position at
its own precision (the cache kept across switches); weights restored after generate, also after an
exception; the KV-cache classifier against a loop formulation, its classes, labels on forced ROUGE
outcomes, training and save/load; sampling statistics; config rules. Spec: methods/decoders/pmpd.md.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import mixer_checks as mc
from rizzrun.attention.sdpa import SDPAttention
from rizzrun.config import ConfigError, load
from rizzrun.decoders import PMPD, Greedy
from rizzrun.decoders.nested_quant import NestedWeights, codes, dequantize, quantize, quantized_linears
from rizzrun.decoders.pmpd import (
    SwitchClassifier,
    SwitchClassifiers,
    candidate_steps,
    precision_schedule,
    switch_examples,
    switch_label,
    train_switch_classifiers,
)
from rizzrun.runner.build import build_decoder
from sampling_checks import chi2_pvalue, draw_counts

pytestmark = pytest.mark.usefixtures("one_thread")

T, N = 13, 10  # prompt length, new tokens


@pytest.fixture(scope="module")
def model():
    return mc.tiny_llama(SDPAttention)


def snapshot(model):
    return {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict().items()}


def assert_same_weights(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k][0]) and v.data_ptr() == snap[k][1], k


def ref_dequantize(nested, bits):
    """ŵ_k from q8 in float64 with integer division (the spec's formula, computed apart)."""
    m = 2 ** (8 - bits)
    q = torch.div(nested.q8.long(), m, rounding_mode="floor")
    return (nested.low.double() + (q * m + (m - 1) / 2) * nested.delta.double()).float()


def k_bit_copy(model, bits, method="uniform"):
    """An independent copy of the model with every block Linear weight replaced by ŵ_bits."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for _, layer in quantized_linears(twin):
            nested = quantize(layer.weight, method)
            layer.weight.copy_(ref_dequantize(nested, bits) if method == "uniform" else dequantize(nested, bits))
    return twin


def mixed_logits(model, ids, bits_per_pos):
    """From scratch, no cache: the parallel forward where each position's Linear outputs use the
    weights of that position's precision (ŵ from `ref_dequantize`). -> logits (B, T, V)."""
    hooks = []
    bits_per_pos = torch.tensor(bits_per_pos)
    for _, layer in quantized_linears(model):
        nested = quantize(layer.weight)
        w = {b: ref_dequantize(nested, b) for b in set(bits_per_pos.tolist())}

        def hook(mod, inp, out, w=w):
            y = torch.empty_like(out)
            for b, wb in w.items():
                sel = bits_per_pos == b
                y[:, sel] = F.linear(inp[0][:, sel], wb)
            return y

        hooks.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(ids)
    finally:
        for h in hooks:
            h.remove()


def reference_generate(model, ids, prefill_bits, decode_bits, n):
    """Greedy decoding recomputed from scratch at every step: (tokens (B, n), logits [n x (B, V)])."""
    seq, bits, logits = ids, [prefill_bits] * ids.shape[1], []
    for i in range(n):
        step = mixed_logits(model, seq, bits)[:, -1]
        logits.append(step)
        seq = torch.cat([seq, step.argmax(-1, keepdim=True)], 1)
        if i < n - 1:
            bits.append(decode_bits[i])
    return seq[:, ids.shape[1]:], logits


# ---------------------------------------------------------------- nested quantisation


def test_hand_derived_codes_and_bucket_centres():
    w = torch.tensor([[-1.0, 0.0, 0.5, 1.55], [2.0, 2.0, 2.0, 2.0]])
    nested = quantize(w)  # row 0: min -1, Δ = 2.55 / 255 = 0.01; row 1 constant: Δ = 0
    assert nested.q8.dtype == torch.uint8
    assert nested.q8.tolist() == [[0, 100, 150, 255], [0, 0, 0, 0]]
    assert codes(nested, 2)[0].tolist() == [0, 1, 2, 3] and codes(nested, 3)[0].tolist() == [0, 3, 4, 7]
    # ŵ_k = min + (q_k·2^(8−k) + (2^(8−k) − 1)/2)·Δ
    torch.testing.assert_close(dequantize(nested, 2)[0], torch.tensor([-0.685, -0.045, 0.595, 1.235]))
    torch.testing.assert_close(dequantize(nested, 3)[0], torch.tensor([-0.845, 0.115, 0.435, 1.395]))
    torch.testing.assert_close(dequantize(nested, 8)[0], w[0])
    for bits in range(2, 9):
        assert torch.equal(dequantize(nested, bits)[1], w[1])
    with pytest.raises(ValueError, match="bits=1 is not allowed"):
        dequantize(nested, 1)


def test_prefix_property_and_nested_buckets_for_every_weight(model):
    for name, layer in quantized_linears(model):
        w = layer.weight.detach()
        nested = quantize(w)
        delta = nested.delta
        for k in range(2, 9):
            wk = dequantize(nested, k)
            torch.testing.assert_close(wk, ref_dequantize(nested, k), atol=1e-6, rtol=0)
            # every weight lies in its k-bit bucket: within half a bucket (2^(8−k)·Δ) of the centre
            assert bool(((w - wk).abs() <= 2 ** (8 - k) * delta / 2 + 1e-6).all()), (name, k)
            if k < 8:
                assert torch.equal(codes(nested, k), codes(nested, k + 1) >> 1), (name, k)
                # the (k+1)-bit bucket is one half of the k-bit one: centres 2^(6−k)·Δ apart
                gap = (dequantize(nested, k + 1) - wk).abs()
                torch.testing.assert_close(gap, (2 ** (6 - k) * delta).expand_as(gap), atol=1e-6, rtol=0)


def test_reconstruction_error_is_monotone_in_bits_per_layer(model):
    for name, layer in quantized_linears(model):
        nested = quantize(layer.weight)
        errors = [float((layer.weight.detach() - dequantize(nested, k)).norm()) for k in range(8, 1, -1)]
        assert errors == sorted(errors) and len(set(errors)) == len(errors), (name, errors)


def test_kmeans_codes_are_nested_and_centroids_are_member_means(model):
    total = {"uniform": [0.0] * 9, "kmeans": [0.0] * 9}
    for name, layer in quantized_linears(model):
        w = layer.weight.detach()
        nested = quantize(w, "kmeans")
        assert nested.q8.dtype == torch.uint8 and nested.low is None
        sse = []
        for k in range(2, 9):
            if k < 8:
                assert torch.equal(codes(nested, k), codes(nested, k + 1) >> 1), (name, k)
            wk = dequantize(nested, k)
            sse.append(float((w - wk).square().sum()))
            for method in total:
                total[method][k] += float((w - dequantize(quantize(w, method), k)).square().sum())
        assert sse == sorted(sse, reverse=True), (name, sse)  # splitting a cluster never adds error
    # the centroid of every (row, code) is the mean of the weights holding that code (one layer, loops)
    w = model.blocks[0].mlp.down.weight.detach()
    nested = quantize(w, "kmeans")
    for k in (2, 3):
        q, wk = codes(nested, k), dequantize(nested, k)
        for r in range(0, w.shape[0], 7):
            for c in q[r].unique().tolist():
                members = q[r] == c
                torch.testing.assert_close(wk[r, members], w[r, members].mean().expand(int(members.sum())))
    for k in range(2, 9):  # non-uniform levels fit Gaussian-like rows better than uniform buckets
        assert total["kmeans"][k] < total["uniform"][k], k


def test_quantised_layers_are_the_block_linears(model):
    names = [n for n, _ in quantized_linears(model)]
    assert names == [f"blocks.{i}.{part}" for i in range(2)
                     for part in ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.gate", "mlp.up", "mlp.down")]
    with pytest.raises(ValueError, match="has no `blocks` module"):
        quantized_linears(torch.nn.Linear(3, 3))


def test_eight_bit_model_is_close_to_fp32(model):
    ids = mc.ids(4, 30)
    nested = NestedWeights(model)
    with torch.no_grad():
        full = model(ids)
        logits = {}
        for bits in (8, 4, 3, 2):
            with nested.use(bits):
                logits[bits] = model(ids)
        with nested.use(8):
            again = model(ids)
    rel = {b: float((x - full).norm() / full.norm()) for b, x in logits.items()}
    assert rel[8] < 0.03 and rel[8] < rel[4] < rel[3] < rel[2], rel
    loss = lambda x: F.cross_entropy(x[:, :-1].flatten(0, 1), ids[:, 1:].flatten())  # noqa: E731
    assert abs(loss(logits[8]) - loss(full)) / loss(full) < 0.01
    assert torch.equal(again, logits[8])  # the cached ŵ_8


def test_use_restores_the_very_same_weights_also_on_error(model):
    snap = snapshot(model)
    nested = NestedWeights(model)
    with pytest.raises(RuntimeError, match="boom"):
        with nested.use(2):
            assert not torch.equal(model.blocks[0].attn.q.weight, snap["blocks.0.attn.q.weight"][0])
            raise RuntimeError("boom")
    assert_same_weights(model, snap)
    assert nested.is_current(model)
    with torch.no_grad():
        model.blocks[0].mlp.up.weight.mul_(1.0)  # an in-place update makes the codes stale
    assert not nested.is_current(model)


# ---------------------------------------------------------------- neutral schedules and cache consistency


@pytest.mark.parametrize("precisions, n_high", [([4, 3], N), ([4, 3], 1000), ([4], None), ([3, 2], [N])])
def test_n_high_at_least_the_length_is_pure_high_precision(model, precisions, n_high):
    ids = mc.ids(2, T)
    d = PMPD(precisions, n_high=n_high, max_new_tokens=N)
    got = d.generate(model, ids)
    want = Greedy(N).generate(k_bit_copy(model, precisions[0]), ids)
    assert torch.equal(got, want)
    assert d.last_stats["decode_bits"] == [precisions[0]] * (N - 1)
    assert d.last_stats["bits_per_weight"] == precisions[0]


@pytest.mark.parametrize("precisions, n_high, prefill", [
    ([4, 3], 0, None),  # high prefill + pure low decoding
    ([4, 3], 4, None),  # a switch mid-generation
    ([8, 3], 2, 8),
    ([4, 3, 2], [2, 6], None),  # chained
    ([4, 2], [0], 8),  # prefill above every decoding precision
])
def test_decoding_equals_from_scratch_reference_with_the_same_precisions(model, precisions, n_high, prefill):
    ids = mc.ids(2, T, seed=3)
    d = PMPD(precisions, n_high=n_high, prefill_bits=prefill, max_new_tokens=N)
    got = d.generate(model, ids)
    switch = [n_high] if isinstance(n_high, int) else n_high
    plan = precision_schedule(precisions, switch, N - 1)
    assert d.last_stats["decode_bits"] == plan
    assert d.last_stats["switch_steps"] == switch
    tokens, _ = reference_generate(model, ids, prefill or precisions[0], plan, N)
    assert torch.equal(got[:, T:], tokens)
    # and the logits, teacher-forced through the stepper: the cache written at one precision is
    # kept when the next forward runs at another
    stepper = d.stepper(model, 2, T + N, ids.device)
    try:
        with torch.no_grad():
            logits = [stepper.prefill(ids, None)] + [stepper.step(tokens[:, i:i + 1]) for i in range(N - 1)]
    finally:
        d.nested_weights(model).restore()
    _, want = reference_generate(model, ids, prefill or precisions[0], plan, N)
    for got_i, want_i in zip(logits, want):
        torch.testing.assert_close(got_i, want_i, atol=1e-4, rtol=1e-4)


def test_n_high_zero_is_low_precision_decoding_after_high_prefill(model):
    ids = mc.ids(2, T, seed=5)
    got = PMPD([4, 3], n_high=0, max_new_tokens=N).generate(model, ids)
    low = k_bit_copy(model, 3)
    # high prefill: the prompt's cache from the 4-bit model, then every forward on the 3-bit one
    high = k_bit_copy(model, 4)
    with torch.no_grad():
        cache = high.init_cache(2, max_len=T + N)
        tok = high.step(ids, cache)[:, -1].argmax(-1, keepdim=True)
        out = [tok]
        for _ in range(N - 1):
            tok = low.step(tok, cache)[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
    assert torch.equal(got[:, T:], torch.cat(out, 1))


def test_kmeans_quantizer_decodes_as_its_k_bit_model(model):
    ids = mc.ids(2, T)
    got = PMPD([3, 2], n_high=N, quantizer="kmeans", max_new_tokens=N).generate(model, ids)
    assert torch.equal(got, Greedy(N).generate(k_bit_copy(model, 3, "kmeans"), ids))
    uniform = PMPD([3, 2], n_high=N, max_new_tokens=N).generate(model, ids)
    assert torch.equal(uniform, Greedy(N).generate(k_bit_copy(model, 3), ids))


def test_default_n_high_is_equal_shares_and_stats(model):
    d = PMPD([4, 3, 2], max_new_tokens=N)
    d.generate(model, mc.ids(1, T))
    s = d.last_stats
    assert s["switch_steps"] == [3, 6] and s["decode_bits"] == [4, 4, 4, 3, 3, 3, 2, 2, 2]
    assert s["bits_per_weight"] == 3.0 and s["prefill_bits"] == 4
    assert s["quantized_params"] == sum(layer.weight.numel() for _, layer in quantized_linears(model))
    assert s["total_params"] == model.num_params()
    d = PMPD([4, 3], n_high=3, max_new_tokens=N)
    d.generate(model, mc.ids(1, T))
    assert d.last_stats["bits_per_weight"] == pytest.approx((3 * 4 + 6 * 3) / 9)


def test_left_padded_batch_matches_rows_alone(model):
    prompts = [mc.ids(1, 9, seed=7)[0].tolist(), mc.ids(1, 13, seed=8)[0].tolist()]
    d = PMPD([4, 3, 2], n_high=[2, 5], max_new_tokens=N)
    both = d.generate(model, prompts)
    for row, p in zip(both, prompts):
        alone = d.generate(model, [p])[0]
        assert row[-N:].tolist() == alone[-N:].tolist()


def test_generate_restores_weights_also_after_an_exception(model):
    snap = snapshot(model)
    d = PMPD([4, 3], n_high=2, max_new_tokens=N)
    d.generate(model, mc.ids(2, T))
    assert_same_weights(model, snap)
    step, calls = model.step, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # mid-decoding, at the low precision
            assert not torch.equal(model.blocks[1].mlp.down.weight, snap["blocks.1.mlp.down.weight"][0])
            raise RuntimeError("boom")
        return step(*args, **kwargs)

    model.step = failing
    try:
        with pytest.raises(RuntimeError, match="boom"):
            d.generate(model, mc.ids(2, T))
    finally:
        del model.step
    assert_same_weights(model, snap)
    assert d.nested_weights(model).bits is None


def test_codes_follow_weight_updates():
    m = mc.tiny_llama(SDPAttention, seed=4)
    ids = mc.ids(1, T)
    d = PMPD([8], max_new_tokens=4)
    first = d.generate(m, ids)
    assert torch.equal(first, Greedy(4).generate(k_bit_copy(m, 8), ids))
    with torch.no_grad():
        for _, layer in quantized_linears(m):
            layer.weight.neg_()
    assert torch.equal(d.generate(m, ids), Greedy(4).generate(k_bit_copy(m, 8), ids))


def test_recurrent_model_static_schedule_and_no_kv_cache():
    from rizzrun.models.rwkv import RWKV

    torch.manual_seed(0)
    m = RWKV(mc.V, d_model=16, n_layer=2, max_seq_len=32).eval()
    ids = mc.ids(2, 7)
    snap = snapshot(m)
    got = PMPD([4, 3], n_high=100, max_new_tokens=5).generate(m, ids)
    assert torch.equal(got, Greedy(5).generate(k_bit_copy(m, 4), ids))
    assert_same_weights(m, snap)
    d = PMPD([4, 3], scheduler="kv_cache", classifier=SwitchClassifiers(8, 2, [(4, 3)]), max_new_tokens=4)
    with pytest.raises(ValueError, match="reads the last layer's key/value cache"):
        d.generate(m, ids)
    assert_same_weights(m, snap)


# ---------------------------------------------------------------- the KV-cache classifier


def loop_classifier(clf, keys, values):
    """The classifier's forward as explicit loops in float64 (eval mode: no dropout)."""
    H, D = clf.n_kv_head, clf.head_dim
    k, v = keys.double().mean(0), values.double().mean(0)  # (T, D)
    q = clf.query.detach().double()
    feats = torch.zeros(D, H, dtype=torch.float64)
    for g in range(H):
        att = torch.stack([torch.softmax(k @ q[g, i] / D ** 0.5, 0) @ v for i in range(H)])  # (H, D)
        feats[:, g] = att.mean(0)
    x = feats.reshape(-1)
    x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + clf.norm.eps) * clf.norm.weight.double() \
        + clf.norm.bias.double()
    h = torch.relu(clf.fc1.weight.double() @ x + clf.fc1.bias.double())
    return clf.fc2.weight.double() @ h + clf.fc2.bias.double()


def test_classifier_matches_loops_and_ignores_padding():
    torch.manual_seed(0)
    clf = SwitchClassifier(8, 2).eval()
    keys, values = torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    logits = clf(keys, values)
    assert logits.shape == (2, 4)
    for b in range(2):
        torch.testing.assert_close(logits[b].double(), loop_classifier(clf, keys[b], values[b]), atol=1e-5, rtol=1e-5)
    padded_k = torch.cat([torch.randn(2, 2, 3, 8) * 50, keys], 2)
    padded_v = torch.cat([torch.randn(2, 2, 3, 8) * 50, values], 2)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, :3] = False
    torch.testing.assert_close(clf(padded_k, padded_v, mask), logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="made for 2 KV heads of dim 8"):
        clf(torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))


def forced(pairs, classes):
    """Classifiers that always predict classes[i] for pairs[i]."""
    out = SwitchClassifiers(8, 2, pairs)
    with torch.no_grad():
        for pair, c in zip(pairs, classes):
            out[pair].fc2.weight.zero_()
            out[pair].fc2.bias.copy_(torch.nn.functional.one_hot(torch.tensor(c), 4).float() * 10)
    return out.eval()


@pytest.mark.parametrize("cls", [0, 1, 2, 3])
def test_kv_cache_scheduler_switches_at_the_predicted_class(model, cls):
    n = 12
    d = PMPD([4, 3], scheduler="kv_cache", classifier=forced([(4, 3)], [cls]), max_new_tokens=n)
    got = d.generate(model, mc.ids(2, T))
    step = candidate_steps(n)[cls]
    assert step == [0, 4, 8, 12][cls]
    assert d.last_stats["switch_steps"] == [step]
    plan = precision_schedule([4, 3], [step], n - 1)
    assert d.last_stats["decode_bits"] == plan
    assert torch.equal(got, PMPD([4, 3], n_high=step, max_new_tokens=n).generate(model, mc.ids(2, T)))


def test_kv_cache_scheduler_random_classifier_and_chained_pairs(model):
    torch.manual_seed(3)
    d = PMPD([4, 3, 2], scheduler="kv_cache", classifier=SwitchClassifiers(8, 2, [(4, 3), (3, 2)]),
             max_new_tokens=N)
    d.generate(model, mc.ids(3, T))
    assert all(s in candidate_steps(N) for s in d.last_stats["switch_steps"])
    # chained: the second pair never switches before the first (running maximum)
    d = PMPD([4, 3, 2], scheduler="kv_cache", classifier=forced([(4, 3), (3, 2)], [2, 0]), max_new_tokens=12)
    d.generate(model, mc.ids(1, T))
    assert d.last_stats["switch_steps"] == [8, 8]
    with pytest.raises(ValueError, match=r"not \[\(3, 2\)\]"):
        PMPD([4, 3, 2], scheduler="kv_cache", classifier=forced([(4, 3)], [0]))


def test_kv_cache_classifier_reads_the_prompt_cache(model):
    """The classifier sees the last layer's keys/values of the prompt prefilled at prefill_bits."""
    seen = []
    clf = forced([(4, 3)], [1])
    inner = clf[(4, 3)].forward

    def spy(keys, values, mask=None):
        seen.append((keys.clone(), values.clone(), mask))
        return inner(keys, values, mask)

    clf[(4, 3)].forward = spy
    ids = mc.ids(1, T)
    PMPD([4, 3], scheduler="kv_cache", classifier=clf, prefill_bits=8, max_new_tokens=6).generate(model, ids)
    twin = k_bit_copy(model, 8)
    with torch.no_grad():
        cache = twin.init_cache(1, max_len=T)
        twin.step(ids, cache)
    k, v = cache.layers[-1].keys_values(T)
    torch.testing.assert_close(seen[0][0], k, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0][1], v, atol=1e-5, rtol=0)


def test_switch_label_on_forced_rouge_outcomes():
    ref = [1, 2, 3, 4, 5, 6]
    high = [1, 2, 3, 4, 5, 9]  # ROUGE-L 5/6 = 0.833
    worse, better = [1, 2, 3, 4, 9, 9], [1, 2, 3, 4, 5, 6]  # 0.667, 1.0
    assert switch_label(ref, high, [[1, 2, 7, 7, 7, 7], worse, better]) == 2
    assert switch_label(ref, high, [high, worse, better]) == 0  # equal counts
    assert switch_label(ref, high, [worse, worse, worse]) == 3  # never
    # rounding to 3 decimals: 718/798 = 0.89975 counts as 0.900 = the high output's 360/400;
    # 718/800 = 0.8975 does not
    ref = list(range(400))
    high = ref[:360] + [-1] * 40
    just_below = ref[:359] + [-1] * 39
    below = ref[:359] + [-1] * 41
    assert switch_label(ref, high, [below, just_below, ref]) == 1


def test_switch_examples_labels_and_inputs(model):
    prompts = [mc.ids(1, 7, seed=s)[0].tolist() for s in (11, 12, 13)]
    n = 9
    # all ROUGE-L are 0 against a reference of an id never generated: the earliest switch (class 0)
    none = switch_examples(model, prompts, [4, 3], n, references=[[10_000]] * 3)
    assert [r["label"] for r in none[(4, 3)]] == [0, 0, 0]
    # against the pure 4-bit output itself (ROUGE-L 1 only for an identical output): for (4, 3)
    # the earliest switch whose output is the 4-bit one; (3, 2) by switch_label on its decodes
    high = k_bit_copy(model, 4)
    refs = [Greedy(n).generate(high, [p])[0, len(p):].tolist() for p in prompts]
    got = switch_examples(model, prompts, [4, 3, 2], n, references=refs)
    for pair in [(4, 3), (3, 2)]:
        for p, ref, row in zip(prompts, refs, got[pair]):
            outs = [PMPD(list(pair), n_high=c, prefill_bits=4, max_new_tokens=n).generate(model, [p])[0, 7:].tolist()
                    for c in candidate_steps(n)[:3]]
            if pair == (4, 3):
                assert row["label"] == next((i for i, o in enumerate(outs) if o == ref), 3)
            else:
                pure = PMPD([3], prefill_bits=4, max_new_tokens=n).generate(model, [p])[0, 7:].tolist()
                assert row["label"] == switch_label(ref, pure, outs)
            assert row["keys"].shape == (2, 7, 8) and row["values"].shape == (2, 7, 8)
    assert sorted({r["label"] for r in got[(4, 3)]}) != [0]  # not every label the trivial one
    # the inputs: the prompt's last-layer cache after the prefill at 4 bits
    with torch.no_grad():
        cache = high.init_cache(1, max_len=7)
        high.step(torch.tensor([prompts[0]]), cache)
    k, v = cache.layers[-1].keys_values(7)
    torch.testing.assert_close(got[(3, 2)][0]["keys"], k[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[(3, 2)][0]["values"], v[0], atol=1e-5, rtol=0)


def test_classifier_trains_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(24):  # the class is readable from the values' sign pattern
        label = i % 4
        v = torch.randn(2, 5, 8, generator=g) * 0.1
        v[:, :, label] += 2.0
        rows.append({"keys": torch.randn(2, 5, 8, generator=g), "values": v, "label": label})
    clfs, history = train_switch_classifiers({(4, 3): rows}, 8, 2, epochs=25, lr=0.01, weight_decay=0.0,
                                             grad_accum=4, dropout=0.0)
    losses = history[(4, 3)]
    assert losses[-1] < 0.3 * losses[0]
    acc = sum(int(clfs.classes((4, 3), r["keys"][None], r["values"][None])) == r["label"] for r in rows) / len(rows)
    assert acc >= 0.9
    path = tmp_path / "switch.safetensors"
    clfs.save(path)
    back = SwitchClassifiers.load(path)
    assert back.pairs == [(4, 3)] and (back.head_dim, back.n_kv_head) == (8, 2)
    for k, v in clfs.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    keys, values = rows[0]["keys"][None], rows[0]["values"][None]
    assert torch.equal(back[(4, 3)](keys, values), clfs[(4, 3)](keys, values))
    d = PMPD([4, 3], scheduler="kv_cache", classifier=str(path))
    assert d.settings()["classifier"] == str(path)
    with pytest.raises(ValueError, match="no such file"):
        PMPD([4, 3], scheduler="kv_cache", classifier=str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        SwitchClassifiers.load(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------- sampling, knobs, config


def test_sampling_statistics():
    d = PMPD([4, 3], do_sample=True, temperature=0.7, top_k=5, seed=0)
    scores = torch.randn(1, 12, generator=torch.Generator().manual_seed(2)) * 2
    keep = scores[0].topk(5).indices
    probs = torch.zeros(12)
    probs[keep] = torch.softmax(scores[0, keep] / 0.7, 0)
    assert chi2_pvalue(draw_counts(d.choose, scores, 20_000), probs) > 0.01


def test_first_sampled_token_follows_the_prefill_precision(model):
    """max_new_tokens=1: the token comes from the prefill logits at prefill_bits (4-bit model)."""
    ids = mc.ids(1, 5).expand(4000, -1).contiguous()
    d = PMPD([4, 3], do_sample=True, seed=1, max_new_tokens=1)
    counts = torch.bincount(d.generate(model, ids)[:, -1], minlength=mc.V)
    with torch.no_grad():
        probs = torch.softmax(k_bit_copy(model, 4)(ids[:1])[0, -1].double(), 0)
    assert chi2_pvalue(counts, probs) > 0.01
    with torch.no_grad():
        probs_fp = torch.softmax(model(ids[:1])[0, -1].double(), 0)
    assert not torch.allclose(probs, probs_fp, atol=1e-3)  # the precision is visible in the logits


@pytest.mark.parametrize("kwargs, match", [
    (dict(precisions=[3, 4]), r"precisions=\[3, 4\] is not allowed: the precisions must go strictly down"),
    (dict(precisions=[4, 1]), r"precisions=\[4, 1\] is not allowed: allowed: a non-empty list"),
    (dict(precisions=[]), r"precisions=\[\] is not allowed"),
    (dict(prefill_bits=16), "prefill_bits=16 is not allowed"),
    (dict(scheduler="kvcache"), "scheduler='kvcache' is not allowed"),
    (dict(n_high=-1), "n_high=-1 is not allowed"),
    (dict(precisions=[4, 3, 2], n_high=3), r"n_high=3 is not allowed: 3 precisions switch 2 times"),
    (dict(precisions=[4, 3, 2], n_high=[5, 2]), r"n_high=\[5, 2\] is not allowed"),
    (dict(precisions=[4, 3, 2], n_high=[5]), r"n_high=\[5\] is not allowed: .* give 2 switch step"),
    (dict(scheduler="kv_cache"), "classifier=None is not allowed"),
    (dict(scheduler="kv_cache", precisions=[4], classifier="x"), "needs at least two precisions"),
    (dict(classifier="x.safetensors"), "only scheduler='kv_cache' reads a classifier"),
    (dict(max_new_tokens=-1), "max_new_tokens=-1 is not allowed"),
    (dict(quantizer="gptq"), "quantizer='gptq' is not allowed: allowed: 'uniform'"),
    (dict(do_sample="yes"), "do_sample='yes' is not allowed"),
])
def test_bad_knobs_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        PMPD(**kwargs)
    assert "\n" not in str(e.value)


def test_config_option_validates_and_builds():
    cfg = load(["decoder=pmpd", "decoder.precisions=[4,3,2]", "decoder.n_high=[3,6]", "decoder.max_new_tokens=8"])
    d = build_decoder(cfg.decoder)
    assert isinstance(d, PMPD) and d.precisions == [4, 3, 2] and d.n_high == [3, 6] and d.prefill_bits == 4
    assert d.settings()["n_high"] == [3, 6]
    assert isinstance(build_decoder(load(["decoder=pmpd"]).decoder), PMPD)
    for overrides, expected in [
        (["decoder.precisions=[3,4]"], "decoder.precisions=[3, 4]: the precisions must go strictly down"),
        (["decoder.scheduler=kv_cache"], "decoder.classifier=null: scheduler='kv_cache' needs the classifier file"),
        (["decoder.prefill_bits=9"], "decoder.prefill_bits=9: out of range; allowed: prefill_bits >= 2 and <= 8"),
        (["decoder.prefill_bits=high"], "decoder.prefill_bits='high': expected int or null, got str"),
        (["decoder.max_new_tokens=-1"], "decoder.max_new_tokens=-1: out of range; allowed: max_new_tokens >= 0"),
        (["decoder.precisions=[4,3,2]", "decoder.n_high=5"], "decoder.n_high=5: 3 precisions switch 2 times"),
        (["decoder.quantizer=kmean"], "decoder.quantizer='kmean': allowed: 'uniform'"),
    ]:
        with pytest.raises(ConfigError) as e:
            load(["decoder=pmpd", *overrides])
        assert len(e.value.problems) == 1 and e.value.problems[0].startswith(expected), e.value.problems
