"""Config rules of `rizzrun.attention.fam.FAMAttention`, with no torch import (see rizzrun.config.specs)."""

from rizzrun.config.specs import readable

RANGES = {
    "FAMAttention": {"block_size": ((">=", 1),), "memory_blocks": ((">=", 0),), "fam_len": ((">=", 0),)},
}


def check_with_model(node: dict, path: str, dims: dict) -> list[str]:
    """A block must fit in the model's sequence: block_size <= max_seq_len."""
    block, longest = node.get("block_size"), dims.get("max_seq_len")
    if not (readable(block) and isinstance(block, int) and not isinstance(block, bool) and isinstance(longest, int)):
        return []
    if block > longest:
        return [f"{path}.block_size={block}: a block is longer than the model's max_seq_len={longest}, so no "
                f"block ever completes and the memory is never written; allowed: {path}.block_size <= {longest}"]
    return []
