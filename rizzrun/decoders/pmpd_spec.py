"""Config rules of `rizzrun.decoders.pmpd.PMPD`, with no torch import (see rizzrun.config.specs).

The same rules run in PMPD's constructor (`problems`), so a decoder built in Python fails alike.
"""

from rizzrun.config.errors import message, show
from rizzrun.config.specs import readable

# The shared decoder knobs' ranges are schema.COMPONENT_RANGES["decoder.*"]; PMPD's own:
RANGES = {"PMPD": {"prefill_bits": ((">=", 2), ("<=", 8))}}

BITS = tuple(range(2, 9))
SCHEDULERS = ("static", "kv_cache")
QUANTIZERS = ("uniform", "kmeans")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def problems(knobs: dict, validator: bool = False) -> list[tuple[str, object, str]]:
    """(key, value, what is wrong and what is allowed) for each bad knob among precisions,
    prefill_bits, quantizer, scheduler, n_high and classifier; unreadable values are skipped. validator=True
    leaves out what the config validator reports itself (types from the signature, RANGES)."""
    out = []
    precisions = knobs.get("precisions", [4, 3])
    good_precisions = False
    typed = lambda v: not validator or (isinstance(v, (list, tuple)) and all(_int(p) for p in v))  # noqa: E731
    if readable(precisions) and typed(precisions):
        if (not isinstance(precisions, (list, tuple)) or not precisions
                or not all(_int(p) and p in BITS for p in precisions)):
            out.append(("precisions", precisions, "allowed: a non-empty list of bit-widths in 2..8, e.g. [4, 3] "
                        "or [4, 3, 2]"))
        elif any(a <= b for a, b in zip(precisions, precisions[1:])):
            out.append(("precisions", precisions, "the precisions must go strictly down (high first), e.g. [4, 3, 2]"))
        else:
            good_precisions = True
    prefill = knobs.get("prefill_bits")
    if not validator and readable(prefill) and prefill is not None and not (_int(prefill) and prefill in BITS):
        out.append(("prefill_bits", prefill, "allowed: null (the highest of precisions) or an integer in 2..8"))
    quantizer = knobs.get("quantizer", "uniform")
    if readable(quantizer) and quantizer not in QUANTIZERS:
        out.append(("quantizer", quantizer, "allowed: 'uniform' (round-to-nearest 8-bit codes) or 'kmeans' "
                    "(per-row k-means seed, clusters split per bit)"))
    scheduler = knobs.get("scheduler", "static")
    if readable(scheduler) and scheduler not in SCHEDULERS:
        out.append(("scheduler", scheduler, "allowed: 'static' (switch at n_high) or 'kv_cache' (a classifier "
                    "reads the prompt's last-layer KV cache)"))
        return out
    pairs = len(precisions) - 1 if good_precisions else None
    n_high, classifier = knobs.get("n_high"), knobs.get("classifier")
    if scheduler == "kv_cache":
        if pairs == 0:
            out.append(("precisions", precisions, "scheduler='kv_cache' needs at least two precisions to switch "
                        "between, e.g. [4, 3]"))
        if readable(n_high) and n_high is not None:
            out.append(("n_high", n_high, "the static scheduler's switch steps; with scheduler='kv_cache' the "
                        "classifier predicts them: set n_high=null"))
        if readable(classifier) and not (isinstance(classifier, str) and classifier):
            if not hasattr(classifier, "forward"):  # a SwitchClassifiers object, given in Python
                out.append(("classifier", classifier, "scheduler='kv_cache' needs the classifier file (safetensors, "
                            "written by rizzrun.decoders.pmpd.SwitchClassifiers.save)"))
        return out
    if readable(classifier) and classifier is not None:
        out.append(("classifier", classifier, "only scheduler='kv_cache' reads a classifier: set classifier=null "
                    "or scheduler='kv_cache'"))
    if not readable(n_high) or n_high is None or not (_int(n_high) or typed(n_high)):
        return out
    if _int(n_high):
        if n_high < 0:
            out.append(("n_high", n_high, "allowed: an integer >= 0 (decoding forwards at the high precision)"))
        elif pairs is not None and pairs != 1:
            out.append(("n_high", n_high, f"{len(precisions)} precisions switch {pairs} times: give one step per "
                        f"switch, a non-decreasing list of {pairs} integers >= 0" if pairs else
                        "one precision never switches: set n_high=null"))
    elif (not isinstance(n_high, (list, tuple)) or not all(_int(s) and s >= 0 for s in n_high)
          or any(a > b for a, b in zip(n_high, n_high[1:]))):
        out.append(("n_high", n_high, "allowed: null, an integer >= 0, or a non-decreasing list of integers >= 0 "
                    "(one switch step per adjacent pair of precisions)"))
    elif pairs is not None and len(n_high) != pairs:
        out.append(("n_high", n_high, f"precisions={show(list(precisions))} switch {pairs} time(s): give {pairs} "
                    "switch step(s)"))
    return out


def check(node: dict, path: str) -> list[str]:
    """The knobs' rules (see `problems`), one line each."""
    return [message(f"{path}.{key}={show(value)}", why) for key, value, why in problems(node, validator=True)]
