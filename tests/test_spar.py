"""SPaR (arXiv 2412.11605): the tree search's order, budget, depth and first-right stop against a
deterministic fake refiner and judge whose trees are worked out by hand; the edit distance against
hand-counted cases; the signed reversal task's checker, answers and corruptions; the control pairs; the
refiner's yes/no judgment read from logits; and job=refine end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

from rizzrun.data.signed import (SignedPrompts, SignedSFT, corrupt, fix_prompt, generate_problems, parse,
                                  right_answer, verify)
from rizzrun.errors import InputError
from rizzrun.selfplay.spar import edit_distance, independent_pairs, tree_search

pytestmark = pytest.mark.usefixtures("one_thread")


# -- edit distance ------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, d", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("abcdef", "abcdef", 0),
    ("abcdef", "abcxef", 1),          # one substitution
    ("abcdef", "abdef", 1),           # one deletion
    ("kitten", "sitting", 3),         # k->s, e->i, +g (the textbook case)
    ("abcdef", "fedcba", 6),          # reversal of 6 distinct letters: no character keeps its place in any alignment cheaper than 6
    ("flaw", "lawn", 2),              # -f, +n
])
def test_edit_distance_by_hand(a, b, d):
    assert edit_distance(a, b) == d
    assert edit_distance(b, a) == d


# -- tree search --------------------------------------------------------------------------------
# A fake refiner: the children of node t are t+"0", t+"1", ... (k of them); the fake judge says
# right exactly for the texts in a set. So the tree is the k-ary tree of strings and the order in
# which nodes are made is checkable by hand.

def _fake(right=(), k_seen=None):
    calls = []

    def refine(text, k):
        calls.append(text)
        if k_seen is not None:
            k_seen.append(k)
        return [text + str(i) for i in range(k)]

    def judge(texts):
        return [t in right for t in texts]

    return refine, judge, calls


def test_bfs_expands_level_by_level_and_stops_at_first_right_child():
    refine, judge, calls = _fake(right={"r10", "r11"})
    out = tree_search("r", refine, judge, k=2, max_expansions=10, max_depth=5, order="bfs")
    # BFS: r -> (r0, r1); r0 -> (r00, r01); r1 -> (r10 right: stop; r11 never judged)
    assert calls == ["r", "r0", "r1"]
    assert out.refined == "r10" and out.expansions == 3
    assert [n.text for n in out.nodes] == ["r", "r0", "r1", "r00", "r01", "r10"]
    assert out.found.depth == 2 and out.nodes[0].verdict is None


def test_dfs_goes_deep_first():
    refine, judge, calls = _fake(right={"r10"})
    out = tree_search("r", refine, judge, k=2, max_expansions=10, max_depth=2, order="dfs")
    # DFS: r -> (r0, r1); r0 -> (r00, r01), both at max depth 2 (never expanded); then r1 -> r10 right
    assert calls == ["r", "r0", "r1"]
    assert out.refined == "r10"
    refine, judge, calls = _fake(right={"r000"})
    out = tree_search("r", refine, judge, k=2, max_expansions=10, max_depth=3, order="dfs")
    assert calls == ["r", "r0", "r00"] and out.refined == "r000" and out.found.depth == 3


def test_budget_and_depth_bound_the_search():
    refine, judge, calls = _fake(right={"r222"}, k_seen=(ks := []))
    out = tree_search("r", refine, judge, k=3, max_expansions=4, max_depth=3)
    assert out.refined is None and out.expansions == 4 and calls == ["r", "r0", "r1", "r2"]
    assert set(ks) == {3} and len(out.nodes) == 1 + 4 * 3
    # depth 1: only the root is expanded, whatever the budget
    refine, judge, calls = _fake(right={"r00"})
    out = tree_search("r", refine, judge, k=2, max_expansions=50, max_depth=1)
    assert calls == ["r"] and out.refined is None and out.expansions == 1
    # a right child at depth 1 is found with a single expansion
    refine, judge, calls = _fake(right={"r2", "r1"})
    out = tree_search("r", refine, judge, k=3, max_expansions=4, max_depth=3)
    assert out.refined == "r1" and out.expansions == 1 and len(out.nodes) == 3  # r2 never judged


def test_repeated_texts_are_not_expanded_again():
    calls = []

    def refine(text, k):  # always the same two texts: a search that only loops
        calls.append(text)
        return ["x", "y"]

    out = tree_search("r", refine, lambda ts: [False] * len(ts), k=2, max_expansions=10, max_depth=5)
    assert calls == ["r", "x", "y"] and out.refined is None and out.expansions == 3


@pytest.mark.parametrize("bad", [dict(k=0), dict(max_expansions=0), dict(max_depth=0), dict(order="astar"),
                                 dict(k=True)])
def test_search_rejects_bad_settings(bad):
    refine, judge, _ = _fake()
    with pytest.raises(ValueError, match=next(iter(bad))):
        tree_search("r", refine, judge, **bad)


# -- the control ------------------------------------------------------------------------------

def test_independent_pairs_one_per_wrong_sample_of_prompts_with_a_right_one():
    samples = [("p", "w1", False), ("p", "R1", True), ("p", "w2", False), ("p", "R2", True), ("p", "w3", False),
               ("q", "w", False)]  # q has no right sample: no pair
    assert independent_pairs(samples) == [
        {"prompt": "p", "chosen": "R1", "rejected": "w1"}, {"prompt": "p", "chosen": "R2", "rejected": "w2"},
        {"prompt": "p", "chosen": "R1", "rejected": "w3"}]


# -- the signed reversal task --------------------------------------------------------------------

def test_checker_by_hand():
    p = "rev:abcdef="
    assert parse(p) == "abcdef"
    assert verify(p, "fedcba/xyz") and verify(p, " fedcba/aaa\n")
    for wrong in ("fedcba", "fedcba/", "fedcba/xy", "fedcba/xyzw", "fedcba/XYZ", "fedcba/x1z", "fedcbb/xyz",
                  "fedcb/xyz", "FEDCBA/xyz", "fedcba xyz", ""):
        assert not verify(p, wrong), wrong
    with pytest.raises(ValueError, match="not a signed reversal prompt"):
        parse("sort:abc=")


def test_answers_follow_and_corruptions_break_with_the_asked_number_of_changes():
    train, val = generate_problems(300, 30)
    assert len(set(train) | set(val)) == 330 and not set(train) & set(val)
    signatures = set()
    for p in train:
        y = right_answer(p, "0")
        assert verify(p, y) and y[:6] == parse(p)[::-1] and y[6] == "/"
        signatures.add(y[7:])
        for changes in (1, 2):
            bad = corrupt(p, y, "abcdefgh", "k", changes)
            assert not verify(p, bad) and edit_distance(bad, y) == changes
            assert bad[6:] == y[6:]  # only the reversal's letters change, never the signature
    assert len(signatures) > 200  # of 8^3 = 512: the signature is free


def test_sft_documents_and_prompts():
    d = SignedSFT(n_train=50, n_val=10, refiner=True, noise=0.0)
    docs = d.documents("train")
    assert len(docs) == 50 * (2 + 3)
    p = d.prompts("train")[0]
    actor, judged_yes, judged_no, fix = docs[0], docs[2], docs[3], docs[4]
    assert actor.startswith(p) and verify(p, actor[len(p):])
    assert judged_yes.startswith("judge:" + p) and judged_yes.endswith("?yes")
    assert verify(p, judged_yes[len("judge:" + p):-4])
    assert judged_no.endswith("?no") and not verify(p, judged_no[len("judge:" + p):-3])
    wrong, rest = fix[len("fix:"):].split(">")
    assert rest.startswith(p) and fix == fix_prompt(p, wrong) + rest[len(p):]
    target = rest[len(p):]
    assert verify(p, target) and not verify(p, wrong) and 1 <= edit_distance(wrong, target) <= 2
    assert all(verify(q, doc[len(q):]) for q, doc in zip(d.prompts("val"), d.documents("val")))
    noisy = SignedSFT(n_train=200, n_val=0, noise=0.3)
    wrong = sum(not verify(q, doc[len(q):]) for q, doc in zip(
        [q for q in noisy.prompts("train") for _ in range(2)], noisy.documents("train")))
    assert 0.2 < wrong / 400 < 0.4
    prompts = SignedPrompts(n_train=50, n_val=10)
    fn = prompts.default_rewards()["correct"][0]
    assert fn(["rev:abcdef=", "rev:abcdef="], ["fedcba/abc", "fedcbb/abc"]) == [1.0, 0.0]
    with pytest.raises(InputError, match="data.alphabet"):
        SignedSFT(alphabet="abC")


# -- the learned refiner's judgment ----------------------------------------------------------------

class _ByteTok:
    eos_id = 0

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_lm_refiner_judges_by_the_yes_no_logits_of_the_last_real_position():
    import torch

    from rizzrun.selfplay.spar import LMRefiner

    class Fake(torch.nn.Module):
        """logits favour 'y' where the last token is '!' and 'n' elsewhere; checks left padding."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, key_padding_mask=None):
            assert key_padding_mask is not None and key_padding_mask[:, -1].all()
            logits = torch.zeros(*ids.shape, 128)
            logits[..., ord("n")] = 1.0
            logits[..., ord("y")] = (ids == ord("!")).float() * 2
            return logits

    r = LMRefiner(Fake(), _ByteTok(), decoder=None)
    assert r.judge_texts(["ab!", "a", "long text!", "x!y"]) == [True, False, True, False]


# -- job=refine end to end -------------------------------------------------------------------------

def test_refine_job_writes_pairs_rft_and_summary(tmp_path, monkeypatch):
    """A sample run's rollouts (written here by hand) refined by a tiny untrained model whose repairs
    are replaced by a fixed table (its judgment is the model's own): the checker as judge, so the
    pairs, distances and RFT fix documents are derived by hand from the table."""
    from rizzrun.config import load
    from rizzrun.runner.train import run
    from rizzrun.selfplay.spar import LMRefiner

    repairs = {"fedcbb/abc": ["gedcbb/abc", "fedcba/abc"],  # the second child is right: y+ at depth 1
               "aedcba/hhh": ["aedcba/hhh", "hedcba/hhh"],  # never right: 2 expansions (root, then hedcba) spent
               "hedcba/hhh": ["gedcba/hhh", "hedcbb/hhh"],
               "ggggga": ["ggggga/", "hgggga/ddd"],          # wrong, right: y+ = hgggga/ddd, 5 characters away
               }
    monkeypatch.setattr(LMRefiner, "refine", lambda self, prompt, response, k: repairs[response][:k])
    # env.json's versions import Lightning (most of a minute on a busy core); not what is tested here
    monkeypatch.setattr("rizzrun.runner.train._environment", lambda: {})

    sample = tmp_path / "sample"
    (sample / "rollouts").mkdir(parents=True)
    p, q = "rev:abcdef=", "rev:aggggh="
    rows = [(p, "fedcba/xyz"), (p, "fedcbb/abc"), (p, "aedcba/hhh"), (q, "ggggga"), (q, "hgggga/aaa")]
    (sample / "rollouts" / "train.jsonl").write_text("".join(json.dumps(
        {"batch": 0, "row": i // 3, "sample": i, "prompt": pr, "completion": c, "reward": None, "truncated": False})
        + "\n" for i, (pr, c) in enumerate(rows)))
    cfg = load(["job=refine", "data=signed_prompts", "data.n_train=20", "data.n_val=5", "tokenizer=byte",
                "decoder=sample", "decoder.temperature=1.0", "decoder.max_new_tokens=8",
                "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
                f"refine.rollouts={sample}", "refine.k=2", "refine.max_expansions=2", "logger=none",
                f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}", "trainer.num_threads=1"])
    run(cfg, tmp_path / "refine")
    out = json.loads((tmp_path / "refine" / "summary.json").read_text())
    assert out["status"] == "completed"
    assert out["samples"] == 5 and out["right_samples"] == 2 and out["roots"] == 3
    assert out["spar_pairs"] == 2 and out["search_success"] == pytest.approx(2 / 3)
    assert out["mean_expansions"] == pytest.approx((1 + 2 + 1) / 3)
    assert out["spar_distance"] == pytest.approx((1 + 5) / 2)
    assert out["independent_distance"] == pytest.approx((4 + 4 + 5) / 3)
    spar = [json.loads(line) for line in (tmp_path / "refine" / "pairs" / "spar.jsonl").read_text().splitlines()]
    assert [(s["chosen"], s["rejected"], s["distance"], s["depth"]) for s in spar] == [
        ("fedcba/abc", "fedcbb/abc", 1, 1), ("hgggga/ddd", "ggggga", 5, 1)]
    control = [json.loads(line) for line in (tmp_path / "refine" / "pairs" / "independent.jsonl").read_text().splitlines()]
    assert [(c["chosen"], c["rejected"], c["distance"]) for c in control] == [
        ("fedcba/xyz", "fedcbb/abc", 4), ("fedcba/xyz", "aedcba/hhh", 4), ("hgggga/aaa", "ggggga", 5)]
    rft = [json.loads(line)["text"] for line in (tmp_path / "refine" / "rft" / "train.jsonl").read_text().splitlines()]
    assert rft[:2] == [fix_prompt(p, "fedcbb/abc") + "fedcba/abc", fix_prompt(q, "ggggga") + "hgggga/ddd"]
    assert all(t.startswith("judge:") and t.endswith(("?yes", "?no")) for t in rft[2:])
    # judge documents carry the checker's answer (kept only where the refiner agreed with it)
    for t in rft[2:]:
        prompt, response = t[len("judge:"):].split("=", 1)
        assert t.endswith("?yes") == verify(prompt + "=", response.rsplit("?", 1)[0])
