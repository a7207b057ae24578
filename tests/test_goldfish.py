"""Goldfish loss (arXiv:2406.10209) against the spec's hand-derived numbers, a pure-Python
per-position reference of the hashed mask, and the official "masked copy + cross-entropy" form."""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.objectives import CrossEntropy, Goldfish, goldfish_mask
from rizzrun.objectives import goldfish as gf_module
from rizzrun.objectives.goldfish import TABLE_SEED, TABLE_SIZE, goldfish_keys, goldfish_table

from test_objectives import LogitsTable  # the same learnable-logits stand-in for a model

REPO = Path(__file__).resolve().parents[1]



def _model_and_batch(labels, v=None, seed=0):
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim == 1:
        labels = labels[None]
    v = v or int(labels.max().clamp(min=1)) + 1
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*labels.shape, v, generator=g) * 2
    return LogitsTable(logits), {"input_ids": torch.zeros_like(labels), "labels": labels}


# --- pure-Python references ------------------------------------------------------------------

def _wrap_int64(x: int) -> int:
    x %= 2**64
    return x - 2**64 if x >= 2**63 else x


def _ref_key(window, table_size=TABLE_SIZE) -> int:
    product = 1
    for t in window:
        product = _wrap_int64(product * int(t))
    return product % table_size  # Python's % is floor modulo, like torch.remainder


def _f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def _ref_hash_keep(row, k, w, include=True, table_size=TABLE_SIZE, table_seed=TABLE_SEED) -> list[bool]:
    """Per position, straight from the spec's wording."""
    table = goldfish_table(table_size, table_seed).tolist()
    out = []
    for s in range(len(row)):
        window = row[s - w + 1 : s + 1] if include else row[s - w : s]
        if (s - w + 1 if include else s - w) < 0:
            out.append(True)  # no full window: never dropped
            continue
        out.append(not table[_ref_key(window, table_size)] < _f32(1.0 / k))
    return out


# --- the spec's numeric examples, exactly ----------------------------------------------------

SPEC_ROW = [5, 17, 3, 9, 11, 2, 8, 6]


def test_spec_w4_example_keys_table_values_and_dropped_positions():
    keys = goldfish_keys(torch.tensor([SPEC_ROW]), context_width=4)
    assert keys.tolist() == [[2295, 5049, 594, 1584, 1056]]  # products are below the table size
    table = goldfish_table()
    assert [round(table[i].item(), 4) for i in keys[0].tolist()] == [0.2421, 0.4204, 0.4218, 0.3695, 0.1352]
    keep = goldfish_mask(torch.tensor([SPEC_ROW]), k=4, strategy="hash", context_width=4)
    assert keep.dtype == torch.bool and keep.shape == (1, 8)
    assert (~keep[0]).nonzero().flatten().tolist() == [3, 7]


def test_spec_w4_example_with_the_preceding_window():
    # include_target_in_hash=False: window j (positions j..j+3) decides position j+4, so the
    # five windows decide positions 4..8; window 0 (0.2421 < 0.25) drops position 4 and window
    # 4 would decide position 8, outside the row.
    keep = goldfish_mask(torch.tensor(SPEC_ROW), k=4, context_width=4, include_target_in_hash=False)
    assert (~keep).nonzero().flatten().tolist() == [4]


def test_spec_w4_example_with_k3_threshold():
    # 1/3: values 0.2421 and 0.1352 are below, 0.4204, 0.4218, 0.3695 are not.
    keep = goldfish_mask(torch.tensor(SPEC_ROW), k=3, context_width=4)
    assert (~keep).nonzero().flatten().tolist() == [3, 7]
    # k=2: every value below 0.5 -> all five decided positions dropped.
    keep = goldfish_mask(torch.tensor(SPEC_ROW), k=2, context_width=4)
    assert (~keep).nonzero().flatten().tolist() == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("k,start,length,dropped", [
    (4, 0, 8, [0, 4]),  # the spec's example
    (4, 1, 8, [1, 5]),
    (3, 2, 10, [2, 5, 8]),
    (4, 9, 8, []),  # start past the row: nothing
])
def test_static_positions(k, start, length, dropped):
    targets = torch.arange(length).repeat(2, 1)
    keep = goldfish_mask(targets, k=k, strategy="static", start_position=start)
    for row in keep:
        assert (~row).nonzero().flatten().tolist() == dropped


OVERFLOW_IDS = [31999, 29871, 13, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366]


def test_spec_w13_overflow_key():
    exact = math.prod(OVERFLOW_IDS)
    assert exact > 2**63 and exact % TABLE_SIZE == 538887  # what big-int arithmetic would give
    assert _wrap_int64(exact) == 8493780950413393920
    keys = goldfish_keys(torch.tensor([OVERFLOW_IDS]), context_width=13)
    assert keys.tolist() == [[986482]]
    assert _ref_key(OVERFLOW_IDS) == 986482


def test_negative_wrapped_product_uses_floor_modulo():
    # 2^62 * 3 wraps to -2^62 in int64; floor modulo keeps the key in [0, table_size).
    ids = [2**31, 2**31, 3]
    wrapped = _wrap_int64(math.prod(ids))
    assert wrapped == -(2**62)
    key = goldfish_keys(torch.tensor(ids), context_width=3).item()
    assert key == wrapped % TABLE_SIZE and 0 <= key < TABLE_SIZE
    assert key != math.fmod(wrapped, TABLE_SIZE)  # a truncating modulo would be negative


def test_zero_products_hit_table_zero_and_are_always_dropped():
    table = goldfish_table()
    assert table[0].item() == pytest.approx(0.2337, abs=5e-5)
    assert table[0].item() < 1 / 4 < 1 / 3
    # A 0 id, or >= 64 factors of two in the window (2^32 * 2^32), gives key 0.
    for row in ([7, 0, 9], [2**32, 2**32, 5]):
        assert goldfish_keys(torch.tensor(row), context_width=3).item() == 0
        for k in (3, 4):
            assert goldfish_mask(torch.tensor(row), k=k, context_width=3).tolist() == [True, True, False]
        assert goldfish_mask(torch.tensor(row), k=5, context_width=3).tolist() == [True, True, True]


# --- second formulation: per-position Python reference --------------------------------------

@pytest.mark.parametrize("w,k,include,vocab", [
    (13, 4, True, 128_256),  # Llama-3-sized ids: products of 13 ids overflow int64
    (13, 3, True, 32_000),
    (4, 4, True, 50_000),
    (3, 2, False, 1000),
    (1, 4, True, 300),
    (2, 8, False, 70_000),
])
def test_hash_mask_equals_python_reference(w, k, include, vocab):
    g = torch.Generator().manual_seed(w * 1000 + k)
    targets = torch.randint(0, vocab, (3, 40), generator=g)
    targets[1, 5:9] = -100  # ignored labels take part in the hash with their value
    keep = goldfish_mask(targets, k=k, context_width=w, include_target_in_hash=include)
    expected = [_ref_hash_keep(row, k, w, include) for row in targets.tolist()]
    assert keep.tolist() == expected
    assert not all(all(r) for r in expected)  # the case exercises drops


def test_hash_keys_overflow_on_random_ids_match_wrapping_reference():
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, 128_256, (4, 30), generator=g)
    keys = goldfish_keys(targets, context_width=13)
    ref = [[_ref_key(row[j : j + 13]) for j in range(len(row) - 12)] for row in targets.tolist()]
    assert keys.tolist() == ref
    exact = [[math.prod(row[j : j + 13]) % TABLE_SIZE for j in range(len(row) - 12)] for row in targets.tolist()]
    assert keys.tolist() != exact  # the overflow path is exercised


def test_hash_mask_is_position_independent():
    # The paper's point: a duplicated passage is masked the same way wherever it appears.
    g = torch.Generator().manual_seed(3)
    passage = torch.randint(0, 32_000, (60,), generator=g)
    rows = torch.randint(0, 32_000, (3, 100), generator=g)
    offsets = (0, 17, 40)
    for r, off in enumerate(offsets):
        rows[r, off : off + 60] = passage
    keep = goldfish_mask(rows, k=4, context_width=13)
    inside = [keep[r, off + 12 : off + 60] for r, off in enumerate(offsets)]  # full windows in the passage
    assert torch.equal(inside[0], inside[1]) and torch.equal(inside[0], inside[2])
    assert not inside[0].all()
    # static is position-dependent: the same passage is masked differently at offset 17
    st = goldfish_mask(rows, k=4, strategy="static")
    assert not torch.equal(st[0, 0:60], st[1, 17:77])


@pytest.mark.parametrize("k,expected", [(3, 1 / 3), (4, 1 / 4), (8, 1 / 8)])
def test_hash_drop_rate_is_one_over_k(k, expected):
    g = torch.Generator().manual_seed(k)
    targets = torch.randint(1, 32_000, (50, 1000), generator=g)
    keep = goldfish_mask(targets, k=k, context_width=13)
    rate = (~keep[:, 12:]).float().mean().item()
    sigma = math.sqrt(expected * (1 - expected) / keep[:, 12:].numel())
    assert abs(rate - expected) < 5 * sigma
    assert keep[:, :12].all()  # the first w-1 targets of a row have no window


def test_mask_shapes_dtypes_and_device():
    t = torch.tensor(SPEC_ROW, dtype=torch.int32)
    one = goldfish_mask(t, k=4, context_width=4)
    assert one.shape == (8,) and one.dtype == torch.bool
    three = goldfish_mask(torch.stack([t, t, t])[None], k=4, context_width=4)  # (1, 3, 8)
    assert three.shape == (1, 3, 8) and all(r.tolist() == one.tolist() for r in three[0])
    meta = goldfish_mask(torch.zeros(2, 20, dtype=torch.long, device="meta"), context_width=4)
    assert meta.device.type == "meta" and meta.shape == (2, 20)


def test_table_is_built_on_cpu_cached_and_moved_per_device():
    a, b = goldfish_table(), goldfish_table(TABLE_SIZE, TABLE_SEED)
    assert a is b and a.device.type == "cpu" and a.dtype == torch.float32 and a.shape == (TABLE_SIZE,)
    fresh = torch.rand(TABLE_SIZE, generator=torch.Generator().manual_seed(TABLE_SEED))
    assert torch.equal(a, fresh)
    small = goldfish_table(101, 5)
    assert small.shape == (101,) and not torch.equal(small, a[:101])
    m1, m2 = goldfish_table(device="meta"), goldfish_table(device=torch.device("meta"))
    assert m1.device.type == "meta" and m1 is m2


# --- strategy "random" -------------------------------------------------------------------------

def test_random_mask_rate_seeding_and_cpu_generator():
    t = torch.zeros(200, 1000, dtype=torch.long)
    keep = goldfish_mask(t, k=4, strategy="random", generator=torch.Generator().manual_seed(1))
    again = goldfish_mask(t, k=4, strategy="random", generator=torch.Generator().manual_seed(1))
    other = goldfish_mask(t, k=4, strategy="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(keep, again) and not torch.equal(keep, other)
    rate = (~keep).float().mean().item()
    assert abs(rate - 0.25) < 5 * math.sqrt(0.25 * 0.75 / t.numel())
    draws = torch.rand(t.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(keep, draws >= 0.25)  # the documented rule
    meta = goldfish_mask(t.to("meta"), k=4, strategy="random", generator=torch.Generator().manual_seed(1))
    assert meta.device.type == "meta"


def test_random_objective_is_seeded_advances_per_call_and_evaluate_draws_nothing():
    model, batch = _model_and_batch(torch.randint(0, 50, (4, 64), generator=torch.Generator().manual_seed(0)))
    a, b = Goldfish(strategy="random", seed=11), Goldfish(strategy="random", seed=11)
    first_a, first_b = a.mask(batch["labels"]), b.mask(batch["labels"])
    assert torch.equal(first_a, first_b)
    a.evaluate(model, batch)  # draws nothing
    b.evaluate(model, batch)
    assert torch.equal(a.mask(batch["labels"]), b.mask(batch["labels"]))
    assert not torch.equal(a.mask(batch["labels"]), first_a)  # the generator advances
    c = Goldfish(strategy="random", seed=12)
    assert not torch.equal(c.mask(batch["labels"]), first_a)


# --- the objective -----------------------------------------------------------------------------

def _official_form(logits, labels, keep, ignore_index=-100):
    """The official application: a copy of the targets with dropped positions set to
    ignore_index, then plain mean cross-entropy."""
    masked = labels.clone()
    masked[~keep] = ignore_index
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), masked.reshape(-1), ignore_index=ignore_index)


@pytest.mark.parametrize("strategy", ["hash", "static"])
def test_loss_and_metrics_equal_official_form_and_python_loop(strategy):
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 40, (3, 30), generator=g)
    labels[2, 20:] = -100
    model, batch = _model_and_batch(labels, v=40)
    obj = Goldfish(k=3, strategy=strategy, context_width=3)
    loss, metrics = obj(model, batch)
    gf_keep = goldfish_mask(labels, k=3, strategy=strategy, context_width=3)
    valid = labels != -100
    assert loss.item() == pytest.approx(_official_form(model.table, labels, gf_keep).item(), rel=1e-6)
    # per-token loop
    lp = torch.log_softmax(model.table.detach().double(), -1)
    kept, dropped, everything = [], [], []
    for b in range(3):
        for t in range(30):
            if valid[b, t]:
                nll = -lp[b, t, labels[b, t]].item()
                everything.append(nll)
                (kept if gf_keep[b, t] else dropped).append(nll)
    assert dropped and kept
    assert metrics["loss"].item() == pytest.approx(sum(kept) / len(kept), rel=1e-6)
    assert metrics["loss_all_tokens"].item() == pytest.approx(sum(everything) / len(everything), rel=1e-6)
    assert metrics["loss_dropped_tokens"].item() == pytest.approx(sum(dropped) / len(dropped), rel=1e-6)
    assert metrics["tokens"].item() == len(kept)
    assert metrics["dropped_fraction"].item() == pytest.approx(len(dropped) / len(everything))
    # the spec's identity for the dropped-token loss
    n_all, n_kept = len(everything), len(kept)
    spec = (metrics["loss_all_tokens"] * n_all - metrics["loss"] * n_kept) / (n_all - n_kept)
    assert metrics["loss_dropped_tokens"].item() == pytest.approx(spec.item(), rel=1e-5)
    assert set(metrics) == {"loss", "loss_all_tokens", "loss_dropped_tokens", "tokens", "dropped_fraction"}
    assert all(not m.requires_grad for m in metrics.values())


def test_gradient_reaches_kept_targets_only():
    labels = torch.tensor([SPEC_ROW, SPEC_ROW[::-1]])
    model, batch = _model_and_batch(labels, v=20)
    loss, _ = Goldfish(k=4, context_width=4)(model, batch)
    loss.backward()
    keep = goldfish_mask(labels, k=4, context_width=4)
    assert not keep.all()
    per_position = model.table.grad.abs().sum(-1)
    assert (per_position[~keep] == 0).all() and (per_position[keep] > 0).all()
    ref = LogitsTable(model.table.detach())
    _official_form(ref.table, labels, keep).backward()
    torch.testing.assert_close(model.table.grad, ref.table.grad)


def test_no_drops_equals_cross_entropy():
    # k -> infinity: no table value is below 1e-12, so nothing is dropped and goldfish is CE.
    g = torch.Generator().manual_seed(9)
    labels = torch.randint(0, 30, (4, 50), generator=g)
    labels[0, :5] = -100
    model, batch = _model_and_batch(labels, v=30)
    loss, metrics = Goldfish(k=10**12)(model, batch)
    ce_loss, ce_metrics = CrossEntropy()(model, batch)
    assert loss.item() == pytest.approx(ce_loss.item(), rel=1e-6)
    assert metrics["tokens"].item() == ce_metrics["tokens"].item() == int((labels != -100).sum())
    assert metrics["dropped_fraction"].item() == 0.0
    # defined when nothing is dropped: the all-token loss (= loss), not 0 or NaN
    assert metrics["loss_dropped_tokens"].item() == metrics["loss_all_tokens"].item() == pytest.approx(loss.item())


def test_evaluate_is_plain_cross_entropy_without_the_mask():
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 30, (2, 40), generator=g)
    labels[1, -3:] = -100
    model, batch = _model_and_batch(labels, v=30)
    obj = Goldfish(k=2, context_width=2)
    loss, metrics = obj.evaluate(model, batch)
    ce_loss, ce_metrics = CrossEntropy()(model, batch)
    assert set(metrics) == set(ce_metrics) == {"loss", "ppl", "tokens"}
    assert loss.item() == ce_loss.item() and metrics["tokens"].item() == ce_metrics["tokens"].item()
    train_loss, _ = obj(model, batch)
    assert train_loss.item() != pytest.approx(loss.item())  # the training loss is masked


def test_loss_is_float32_for_low_precision_logits():
    labels = torch.tensor([SPEC_ROW])

    class Half(nn.Module):
        def forward(self, input_ids):
            g = torch.Generator().manual_seed(0)
            return torch.randn(*input_ids.shape, 20, generator=g).to(torch.bfloat16)

    loss, metrics = Goldfish(context_width=4)(Half(), {"input_ids": torch.zeros_like(labels), "labels": labels})
    assert loss.dtype == torch.float32 and metrics["loss_all_tokens"].dtype == torch.float32


# --- edge cases from the spec ---------------------------------------------------------------

class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def goldfish_log():
    handler = _Capture()
    logger = logging.getLogger(gf_module.__name__)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_rows_shorter_than_the_window_drop_nothing_and_log_once(goldfish_log):
    labels = torch.zeros(2, 12, dtype=torch.long)  # ids 0: any full window would be dropped (table[0])
    model, batch = _model_and_batch(labels, v=5)
    obj = Goldfish(k=4, context_width=13)
    loss, metrics = obj(model, batch)
    assert metrics["tokens"].item() == 24 and metrics["dropped_fraction"].item() == 0.0
    assert loss.item() == pytest.approx(CrossEntropy()(model, batch)[0].item(), rel=1e-6)
    obj(model, batch)
    assert len(goldfish_log) == 1 and "12 targets" in goldfish_log[0] and "width 13" in goldfish_log[0]
    # one more target gives the first full window, which is dropped
    assert goldfish_mask(torch.zeros(13, dtype=torch.long), k=4).tolist() == [True] * 12 + [False]
    # without the target in the hash, a row needs context_width + 1 targets
    assert goldfish_mask(torch.zeros(13, dtype=torch.long), k=4, include_target_in_hash=False).all()
    assert goldfish_mask(torch.zeros(14, dtype=torch.long), k=4,
                         include_target_in_hash=False).tolist() == [True] * 13 + [False]
    Goldfish(k=4, include_target_in_hash=False).mask(torch.zeros(1, 13, dtype=torch.long))
    assert len(goldfish_log) == 2
    Goldfish(k=4, strategy="static").mask(torch.zeros(1, 3, dtype=torch.long))  # static has no window
    assert len(goldfish_log) == 2


def test_padding_is_never_counted_and_the_mask_comes_first():
    g = torch.Generator().manual_seed(4)
    real = torch.randint(1, 1000, (30,), generator=g)
    labels = torch.full((2, 40), -100)
    labels[0, :30] = real  # right padding
    labels[1, :] = torch.randint(1, 1000, (40,), generator=g)
    model, batch = _model_and_batch(labels, v=1000)
    obj = Goldfish(k=3, context_width=4)
    loss, metrics = obj(model, batch)
    gf_keep = goldfish_mask(labels, k=3, context_width=4)  # computed on the labels as they are
    valid = labels != -100
    n_valid = int(valid.sum())
    n_drop = int((valid & ~gf_keep).sum())
    assert n_valid == 70 and n_drop > 0
    assert metrics["tokens"].item() == n_valid - n_drop
    assert metrics["dropped_fraction"].item() == pytest.approx(n_drop / n_valid)
    assert loss.item() == pytest.approx(_official_form(model.table, labels, gf_keep).item(), rel=1e-6)
    # ignored targets never reach a denominator; the real ones are masked as in the unpadded row
    assert torch.equal(gf_keep[0, :30], goldfish_mask(real, k=3, context_width=4))


def test_right_padded_row_with_fewer_real_targets_than_the_window_drops_nothing():
    labels = torch.full((1, 30), -100)
    labels[0, :10] = 0  # ten real targets whose every full window would be dropped (key 0)
    keep = goldfish_mask(labels, k=4, context_width=13) & (labels != -100)
    assert keep[0, :10].all()
    _, metrics = Goldfish(k=4, context_width=13)(*_model_and_batch(labels, v=3))
    assert metrics["tokens"].item() == 10 and metrics["dropped_fraction"].item() == 0.0


def test_ignored_labels_take_part_in_the_hash_with_their_value():
    # A window holding -100 is hashed with -100 in the product (the official code hashes pad
    # ids the same way): the decision for position 3 comes from prod(-100, 7, 11, 13).
    row = torch.tensor([1, -100, 7, 11, 13])
    keys = goldfish_keys(row, context_width=4)
    assert keys.tolist() == [(-100 * 7 * 11) % TABLE_SIZE, (-100 * 7 * 11 * 13) % TABLE_SIZE]
    assert keys[1].item() == TABLE_SIZE - 100100


def test_packed_documents_are_hashed_across_the_eos_separator():
    # lm batches join documents with EOS; the batch has no boundaries, so windows run across
    # them, as in the official code. EOS targets are ordinary tokens and can be dropped.
    eos, w = 2, 4
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        doc_a = torch.randint(3, 500, (20,), generator=g)
        doc_b = torch.randint(3, 500, (20,), generator=g)
        stream = torch.cat([doc_a, torch.tensor([eos]), doc_b])
        keep = goldfish_mask(stream, k=3, context_width=w)
        boundary = 20
        eos_dropped = not keep[boundary]
        # doc B's first w-1 targets: per-document hashing could not drop them
        early_b_dropped = not keep[boundary + 1 : boundary + w].all()
        if eos_dropped and early_b_dropped:
            break
    else:
        pytest.fail("no draw with a dropped EOS and a dropped early doc-B target")
    assert keep.tolist() == _ref_hash_keep(stream.tolist(), 3, w)
    # the same stream packed into a (2, 20) batch: every row is hashed on its own
    rows = stream[:40].view(2, 20)
    packed = goldfish_mask(rows, k=3, context_width=w)
    assert torch.equal(packed[0], keep[:20])
    assert torch.equal(packed[1, w - 1 :], keep[20 + w - 1 : 40])
    assert packed[1, : w - 1].all()  # a block's first w-1 targets have no full window


def test_all_dropped_micro_batch_gives_zero_loss_and_zero_gradients():
    # w=2: the first target is ignored; every other window holds a 0 -> table[0] < 1/4: dropped.
    labels = torch.tensor([[-100, 0, 0, 0], [-100, 0, 7, 0]])
    model, batch = _model_and_batch(labels, v=8)
    loss, metrics = Goldfish(k=4, context_width=2)(model, batch)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(model.table.grad, torch.zeros_like(model.table))
    assert metrics["tokens"].item() == 0
    assert metrics["dropped_fraction"].item() == 1.0
    ce = CrossEntropy()(model, batch)[0].item()
    assert metrics["loss_all_tokens"].item() == pytest.approx(ce, rel=1e-6)
    assert metrics["loss_dropped_tokens"].item() == pytest.approx(ce, rel=1e-6)
    assert all(torch.isfinite(v.float()) for v in metrics.values())


def test_all_ignored_batch():
    labels = torch.full((2, 20), -100)
    model, batch = _model_and_batch(labels, v=4)
    loss, metrics = Goldfish(context_width=4)(model, batch)
    assert loss.item() == 0.0 and metrics["tokens"].item() == 0
    assert metrics["dropped_fraction"].item() == 0.0 and metrics["loss_all_tokens"].item() == 0.0
    assert metrics["loss_dropped_tokens"].item() == 0.0


# --- arguments and wiring ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,needle", [
    ({"k": 1}, "k=1 is not allowed: it must be an integer >= 2"),
    ({"k": 2.5}, "k=2.5 is not allowed: it must be an integer >= 2"),
    ({"k": True}, "k=True is not allowed"),
    ({"strategy": "hashh"}, "strategy='hashh' is not allowed: allowed are 'static', 'random', 'hash'"),
    ({"context_width": 0}, "context_width=0 is not allowed: it must be an integer >= 1"),
    ({"table_size": 0}, "table_size=0 is not allowed: it must be an integer >= 1"),
    ({"table_seed": -1}, "table_seed=-1 is not allowed: it must be an integer >= 0 and <= 18446744073709551615"),
    ({"start_position": -1}, "start_position=-1 is not allowed: it must be an integer >= 0"),
    ({"include_target_in_hash": "yes"}, "include_target_in_hash='yes' is not allowed: it must be true or false"),
    ({"ignore_index": 1.5}, "ignore_index=1.5 is not allowed: it must be an integer"),
    ({"seed": -3}, "seed=-3 is not allowed: it must be an integer >= 0"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, needle):
    with pytest.raises(ValueError) as info:
        Goldfish(**kwargs)
    assert needle in str(info.value)
    mask_kwargs = {k: v for k, v in kwargs.items() if k not in ("ignore_index", "seed")}
    if mask_kwargs:
        with pytest.raises(ValueError) as info:
            goldfish_mask(torch.tensor(SPEC_ROW), **mask_kwargs)
        assert needle in str(info.value)


def test_bad_mask_inputs():
    with pytest.raises(ValueError, match="targets of dtype torch.float32 are not allowed"):
        goldfish_mask(torch.zeros(5))

    class DeviceGenerator:  # stands for a CUDA generator, which a CPU-only machine cannot make
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="generator on cuda is not allowed: it must be a CPU torch.Generator"):
        goldfish_mask(torch.zeros(5, dtype=torch.long), strategy="random", generator=DeviceGenerator())
    with pytest.raises(ValueError, match="rows of length 3 are shorter than context_width=4"):
        goldfish_keys(torch.zeros(3, dtype=torch.long), context_width=4)
    model, batch = _model_and_batch([1, 2, 3])
    with pytest.raises(ValueError, match="missing \\['labels'\\]"):
        Goldfish()(model, {"input_ids": batch["input_ids"]})
    with pytest.raises(ValueError, match="do not match labels"):
        Goldfish()(model, {"input_ids": batch["input_ids"], "labels": torch.zeros(1, 5, dtype=torch.long)})


def test_batch_kind_is_a_plain_literal_read_by_ast():
    tree = ast.parse(Path(gf_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Goldfish")
    values = [s.value.value for s in cls.body if isinstance(s, ast.Assign)
              and [getattr(t, "id", None) for t in s.targets] == ["batch_kind"] and isinstance(s.value, ast.Constant)]
    assert values == ["lm"] and Goldfish.batch_kind == "lm"


def test_yaml_defaults_match_the_signature_and_the_spec():
    import inspect

    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "objective" / "goldfish.yaml")
    params = inspect.signature(Goldfish).parameters
    assert node._target_ == "rizzrun.objectives.goldfish.Goldfish"
    assert set(node) - {"_target_"} == set(params)
    for name, p in params.items():
        if name != "seed":  # interpolates the run's seed
            assert node[name] == p.default, name
    assert OmegaConf.to_container(node)["seed"] == "${seed}"
    spec = {"k": 4, "strategy": "hash", "context_width": 13, "table_size": 1_000_003,
            "table_seed": 2971215073, "start_position": 0, "include_target_in_hash": True, "ignore_index": -100}
    assert {n: params[n].default for n in spec} == spec


def test_config_option_validates_and_instantiates():
    from hydra.utils import instantiate

    from rizzrun.config import load

    cfg = load(["objective=goldfish", "objective.k=3", "objective.strategy=static", "seed=5"])
    obj = instantiate(cfg.objective)
    assert isinstance(obj, Goldfish)
    assert (obj.k, obj.strategy, obj.context_width, obj.seed) == (3, "static", 13, 5)
    assert "Goldfish(k=3, strategy='static'" in repr(obj)


def test_validation_rejects_impossible_goldfish_settings_before_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from rizzrun.config import load, ConfigError\n"
            "try:\n    load(['objective=goldfish', 'objective.k=1', 'objective.context_width=0'])\n"
            "except ConfigError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "objective.k=1: out of range; allowed: k >= 2" in out
    assert "objective.context_width=0: out of range; allowed: context_width >= 1" in out
    assert out.strip().endswith("False")  # reported without importing torch
