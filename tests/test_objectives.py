"""CrossEntropy against hand-derived values, a per-token Python loop and torch's own loss."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.objectives import CrossEntropy
from rizzrun.objectives import ce as ce_module


class LogitsTable(nn.Module):
    """Returns a learnable (B, T, V) table as the logits, so gradients land per position."""

    def __init__(self, logits):
        super().__init__()
        self.table = nn.Parameter(logits.clone())

    def forward(self, input_ids):
        assert input_ids.shape == self.table.shape[:2]
        return self.table


def _batch(b=3, t=7, v=13, seed=0, ignore_frac=0.3, ignore_index=-100):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g) * 2
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[torch.rand(b, t, generator=g) < ignore_frac] = ignore_index
    labels[0, 0] = 1  # at least one real target whatever the draw
    labels[0, 1] = ignore_index  # and at least one ignored position
    return logits, {"input_ids": torch.zeros(b, t, dtype=torch.long), "labels": labels}


def test_batch_kind_is_a_plain_literal_read_by_ast():
    tree = ast.parse(Path(ce_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CrossEntropy")
    values = [
        s.value.value
        for s in cls.body
        if isinstance(s, ast.Assign)
        and [getattr(t, "id", None) for t in s.targets] == ["batch_kind"]
        and isinstance(s.value, ast.Constant)
    ]
    assert values == ["lm"] and CrossEntropy.batch_kind == "lm"


@pytest.mark.parametrize("vocab", [2, 13, 1000])
def test_uniform_logits_give_log_vocab(vocab):
    # softmax of equal logits is 1/V everywhere, so every target costs exactly log V.
    logits, batch = _batch(v=vocab)
    loss, metrics = CrossEntropy()(LogitsTable(torch.zeros_like(logits)), batch)
    assert loss.item() == pytest.approx(math.log(vocab), rel=1e-6)
    assert metrics["ppl"].item() == pytest.approx(vocab, rel=1e-5)


def test_equals_per_token_python_loop():
    logits, batch = _batch(seed=1)
    loss, metrics = CrossEntropy()(LogitsTable(logits), batch)
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = batch["labels"][b, t].item()
            if y != -100:
                total += -torch.log_softmax(logits[b, t].double(), -1)[y].item()
                count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-6)
    assert metrics["loss"].item() == pytest.approx(total / count, rel=1e-6)
    assert metrics["ppl"].item() == pytest.approx(math.exp(total / count), rel=1e-5)
    assert metrics["tokens"].item() == count
    assert all(not m.requires_grad for m in metrics.values())


@pytest.mark.parametrize("ignore_index", [-100, 0, 5])
def test_equals_torch_cross_entropy_mean(ignore_index):
    logits, batch = _batch(seed=2, ignore_index=ignore_index)
    loss, _ = CrossEntropy(ignore_index=ignore_index)(LogitsTable(logits), batch)
    expected = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=ignore_index, reduction="mean"
    )
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)


def test_ignored_positions_affect_neither_loss_nor_gradients():
    logits, batch = _batch(seed=3)
    ignored = batch["labels"] == -100
    model = LogitsTable(logits)
    loss, metrics = CrossEntropy()(model, batch)
    loss.backward()
    # Hand-derived gradient: (softmax - onehot) / number of targets at real positions, 0 elsewhere.
    n = (~ignored).sum()
    onehot = F.one_hot(batch["labels"].clamp(min=0), logits.shape[-1]).float()
    expected = ((logits.softmax(-1) - onehot) / n) * (~ignored)[..., None]
    torch.testing.assert_close(model.table.grad, expected, rtol=1e-5, atol=1e-7)
    assert torch.all(model.table.grad[ignored] == 0)

    scrambled = logits.clone()
    scrambled[ignored] = torch.randn_like(scrambled[ignored]) * 50
    other = LogitsTable(scrambled)
    loss2, _ = CrossEntropy()(other, batch)
    loss2.backward()
    assert loss2.item() == loss.item()
    assert torch.equal(other.table.grad[~ignored], model.table.grad[~ignored])


def test_all_targets_ignored_gives_zero_loss_with_graph():
    logits, batch = _batch(seed=4)
    batch["labels"].fill_(-100)
    model = LogitsTable(logits)
    loss, metrics = CrossEntropy()(model, batch)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(model.table.grad, torch.zeros_like(logits))
    assert metrics["tokens"].item() == 0
    assert metrics["loss"].item() == 0.0 and metrics["ppl"].item() == 1.0


def test_float32_loss_under_bf16_autocast():
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.head = nn.Embedding(50, 16), nn.Linear(16, 50)
            self.last_logits = None

        def forward(self, ids):
            self.last_logits = self.head(self.emb(ids) * 4)
            return self.last_logits

    model = TinyLM()
    ids = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids.roll(-1, 1)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = CrossEntropy()(model, batch)
    assert model.last_logits.dtype == torch.bfloat16, "autocast did not apply; the test would prove nothing"
    assert loss.dtype == torch.float32
    # The same bf16 logits, upcast and reduced in float64: a bf16 reduction would miss by ~1e-2.
    ref = F.cross_entropy(model.last_logits.double().reshape(-1, 50), batch["labels"].reshape(-1))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_argument_and_shape_errors():
    with pytest.raises(ValueError, match="ignore_index='x'"):
        CrossEntropy(ignore_index="x")
    logits, batch = _batch()
    with pytest.raises(ValueError, match="labels"):
        CrossEntropy()(LogitsTable(logits), {"input_ids": batch["input_ids"]})
    with pytest.raises(ValueError, match=r"\(3, 7, 13\).*\(3, 6\)"):
        CrossEntropy()(lambda ids: logits, {"input_ids": batch["input_ids"], "labels": batch["labels"][:, :6]})
