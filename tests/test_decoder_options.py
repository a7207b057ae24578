"""Every decoder option of conf/decoder/ (found through the catalog, never listed here) builds from
its yaml through `build_decoder` with a byte tokenizer, passes the validator's checks as shipped,
and generates on a tiny random Llama and RWKV: ids inside the vocabulary, the prompt kept, the
same ids again for the same seed whatever the global RNG did. Its ranges are the decoder's own:
a value the validator refuses before torch, the decoder's constructor refuses too.

A new option whose yaml has a mandatory value (`???`) must be given one in REQUIRED below, and
one that cannot run on RWKV must say so in RWKV_REFUSES (with the start of its error): the first
test fails until it does, so no option slips through untested."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from rizzrun.config import catalog, schema, specs, signatures
from rizzrun.config.validate import check_component
from rizzrun.runner.build import build_decoder
from rizzrun.tokenizers.byte import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = catalog.options("decoder")
# option -> a value for each of its yaml's mandatory (`???`) keys
REQUIRED: dict[str, dict] = {}
# option -> how its error on RWKV starts (a decoder that needs a key/value cache, say)
RWKV_REFUSES: dict[str, str] = {"think": "RWKV keeps a fixed-size recurrent state, not a key/value cache"}
TOK = ByteTokenizer()
NEW = 6  # tokens generated per call
PROMPTS = [[TOK.eos_id, *TOK.encode("def f(x):")], [TOK.eos_id, *TOK.encode("a")]]  # unequal lengths: padding


def option_node(name: str, **extra):
    node = OmegaConf.load(catalog.option_file("decoder", name))
    for key, value in {**REQUIRED.get(name, {}), **extra}.items():
        node[key] = value
    return node


def test_every_option_is_covered():
    """Each option's `???` keys get a value in REQUIRED, and nothing more; both dicts name
    options that exist; the options are the yaml files (the catalog hides none)."""
    assert OPTIONS == sorted(p.stem for p in catalog.option_file("decoder", "x").parent.glob("*.yaml"))
    assert {"greedy", "sample", "typical"} <= set(OPTIONS)
    for name in OPTIONS:
        node = OmegaConf.load(catalog.option_file("decoder", name))
        missing = {k for k in node if OmegaConf.is_missing(node, k)}
        assert missing == set(REQUIRED.get(name, {})), (name, missing)
    assert set(REQUIRED) <= set(OPTIONS) and set(RWKV_REFUSES) <= set(OPTIONS)


@pytest.mark.parametrize("name", OPTIONS)
def test_the_shipped_option_passes_the_validator(name):
    assert check_component("decoder", option_node(name)) == []
    for key in REQUIRED.get(name, {}):  # a mandatory value left out is one line naming it
        bare = OmegaConf.load(catalog.option_file("decoder", name))
        assert f"decoder.{key}=???: required value is not set; set it, e.g. decoder.{key}=VALUE" in \
            check_component("decoder", bare)


def _tiny_llama():
    from rizzrun.models.llama import Llama

    torch.manual_seed(0)
    model = Llama(TOK.vocab_size, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64, max_seq_len=64)
    with torch.no_grad():  # spread logits: samplers have several likely tokens, greedy no near-ties
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.ndim == 2 else p.normal_(1.0, 0.1)
    return model.eval()


def _tiny_rwkv():
    from rizzrun.models.rwkv import RWKV

    torch.manual_seed(0)
    model = RWKV(TOK.vocab_size, d_model=16, n_layer=2, max_seq_len=64)
    with torch.no_grad():  # the init zeroes the output projections: noise makes the mixers count
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    return {"llama": _tiny_llama(), "rwkv": _tiny_rwkv()}


def _generate(decoder, model) -> torch.Tensor:
    with torch.no_grad():
        return decoder.generate(model, [list(p) for p in PROMPTS], eos_token_id=TOK.eos_id, pad_token_id=TOK.pad_id)


@pytest.mark.parametrize("kind", ["llama", "rwkv"])
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_generates_on_a_tiny_model(name, kind, models):
    model = models[kind]
    seeded = "seed" in OmegaConf.load(catalog.option_file("decoder", name))
    node = option_node(name, max_new_tokens=NEW, **({"seed": 7} if seeded else {}))
    decoder = build_decoder(node, TOK)
    if kind == "rwkv" and name in RWKV_REFUSES:
        with pytest.raises(ValueError, match="^" + RWKV_REFUSES[name]):
            _generate(decoder, model)
        return
    torch.manual_seed(1)
    out = _generate(decoder, model)
    width = max(map(len, PROMPTS))
    assert out.dtype == torch.long and out.shape[0] == 2 and width < out.shape[1] <= width + NEW
    for row, prompt in zip(out.tolist(), PROMPTS):  # left-padded prompt kept as given
        assert row[width - len(prompt):width] == prompt
    new = out[:, width:]
    assert bool(((new >= 0) & (new < TOK.vocab_size)).all())
    torch.manual_seed(12345)  # the global RNG moved: the decoder's own seed decides
    assert torch.equal(_generate(build_decoder(node, TOK), model), out)
    assert torch.equal(_generate(decoder, model), out)  # and a second call of the same decoder


def _bounds(name: str) -> dict:
    """{key: ((op, bound), ...)} of an option's arguments, as the validator reads them."""
    node = OmegaConf.load(catalog.option_file("decoder", name))
    target = signatures.resolve(str(node._target_))
    params = {p.name for p in target.keyword_params()}
    ranged = specs.ranges(target)
    out = {}
    for key in params:
        bounds = schema.COMPONENT_RANGES.get(f"decoder.{key}", ()) + ranged.get(key, ())
        if bounds:
            out[key] = bounds
    return out


def _outside(op: str, bound: float, like) -> float | int:
    step = 1 if isinstance(like, int) and not isinstance(like, bool) else 1e-3
    return {">": bound, ">=": bound - step, "<": bound, "<=": bound + step}[op]


@pytest.mark.parametrize("name", OPTIONS)
def test_a_value_the_validator_refuses_the_decoder_refuses(name):
    """For each ranged argument of each option, a value just outside each bound (and inf/nan for
    a float): the validator names it, and the decoder's constructor raises ValueError."""
    from hydra.utils import instantiate

    node = option_node(name)
    checked = 0
    for key, bounds in _bounds(name).items():
        default = node.get(key)
        like = default if isinstance(default, (int, float)) else (1.0 if key != "seed" else 0)
        bad = [_outside(op, bound, like) for op, bound in bounds]
        if isinstance(like, float):
            bad += [float("inf"), float("nan")]
        for value in bad:
            trial = option_node(name, **{key: value})
            found = check_component("decoder", trial)
            assert any(p.startswith(f"decoder.{key}=") for p in found), (name, key, value, found)
            with pytest.raises(Exception) as info:
                instantiate(trial)
            assert isinstance(info.value, ValueError) or isinstance(info.value.__cause__, ValueError), info.value
            checked += 1
    assert checked or not _bounds(name)
