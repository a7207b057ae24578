"""data=pydoc_slice (rizzrun.data.pydoc_slice.PyDocSlice): a topical slice of the pydoc corpus by
top-level module, used by ParamΔ's tiny experiment (recipes/paramdelta_tiny.yaml). Checked against
PyDocCorpus itself: two complementary slices partition its splits document for document."""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate

from rizzrun.config import compose
from rizzrun.data.pydoc import PyDocCorpus
from rizzrun.data.pydoc_slice import NETWORK_MODULES, PyDocSlice, module_of
from rizzrun.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

# The first 400 documents in sorted file order reach into asyncio/ and base64.py.
KW = dict(seq_len=32, batch_size=4, val_fraction=0.2, max_docs=400)
MODULES = ["asyncio", "base64", "nosuchmodule"]


@pytest.fixture(scope="module")
def cache(shared_cache):
    return str(shared_cache)


def test_module_of():
    assert module_of("email/mime/text.py:3:MIMEText") == "email"
    assert module_of("difflib.py:10:SequenceMatcher.ratio") == "difflib"
    assert module_of("__future__.py:1:<module>") == "__future__"


def test_two_complementary_slices_partition_the_corpus_by_module(cache):
    full = PyDocCorpus(cache_dir=cache, **KW).documents()
    inside = PyDocSlice(modules=MODULES, cache_dir=cache, **KW).documents()
    outside = PyDocSlice(modules=MODULES, exclude=True, cache_dir=cache, **KW).documents()
    pattern = re.compile(r"^(asyncio/|base64\.py:)")  # a second reading of "top-level module"
    for split in ("train", "val"):
        texts, locations = full[split]
        want_in = [(t, loc) for t, loc in zip(texts, locations) if pattern.match(loc)]
        want_out = [(t, loc) for t, loc in zip(texts, locations) if not pattern.match(loc)]
        assert list(zip(*inside[split])) == want_in  # same documents, same order
        assert list(zip(*outside[split])) == want_out
    assert len(inside["train"][0]) > 20 and len(inside["val"][0]) > 2 and len(outside["train"][0]) > 100


def test_fingerprints_follow_the_slice(cache):
    a = PyDocSlice(modules=MODULES, cache_dir=cache, **KW)
    assert a.fingerprint == PyDocSlice(modules=list(reversed(MODULES)), cache_dir=cache, **KW).fingerprint
    others = {PyDocSlice(modules=MODULES, exclude=True, cache_dir=cache, **KW).fingerprint,
              PyDocSlice(modules=["asyncio"], cache_dir=cache, **KW).fingerprint,
              PyDocCorpus(cache_dir=cache, **KW).fingerprint}
    assert a.fingerprint not in others and len(others) == 3


def test_setup_gives_batches_of_the_slice_only(cache):
    from rizzrun.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    data = PyDocSlice(modules=["base64"], cache_dir=cache, **KW)
    data.setup(tok)
    text = "".join(data.documents()["train"][0])
    batch = next(iter(data.train_batches()))
    decoded = tok.decode([i for i in batch["input_ids"][0].tolist() if i < 256])
    assert decoded and decoded[:20] in text  # a base64 docstring, packed
    assert data.stats["train"]["documents"] == len(data.documents()["train"][0])


def test_an_empty_slice_and_bad_modules_are_named(cache):
    from rizzrun.tokenizers.byte import ByteTokenizer

    with pytest.raises(InputError, match=r"data.modules=\['nosuchmodule'\] \(exclude=false\): the training split is "
                                         r"empty .*: name modules that have docstrings"):
        PyDocSlice(modules=["nosuchmodule"], cache_dir=cache, **KW).setup(ByteTokenizer())
    for bad in ([], "email", [""], None):
        with pytest.raises(InputError, match=r"^data.modules=.*: must be a non-empty list of top-level module names"):
            PyDocSlice(modules=bad, cache_dir=cache)
    with pytest.raises(InputError, match=r"^data.exclude='yes': must be true or false"):
        PyDocSlice(exclude="yes", cache_dir=cache)


def test_the_config_option_is_the_network_slice():
    cfg = compose(["data=pydoc_slice", "tokenizer=byte"])
    data = instantiate(cfg.data)
    assert isinstance(data, PyDocSlice) and data.modules == tuple(sorted(NETWORK_MODULES)) and not data.exclude
    assert data.val_fraction == 0.1 and data.seq_len == 128
