"""What a run of several processes (DDP, FSDP) needs beyond Lightning's strategies: each rank's
share of the data, and the process group ended with the run.

Data: `data.batch_size` is per process. With P processes the data component is built with
batch_size × P, so global batch i is exactly the batch a single process with that batch size
would train on (the same epoch permutation, the same rows), and rank r trains on its r-th
share of the rows (`torch.tensor_split` along the batch dimension: equal shares when P divides
the batch, as it does whenever the split holds at least batch_size × P blocks). The position in
the data is the global batch index, the same on every rank, so a checkpoint resumes every rank
exactly. This holds for every data kind (packed, document, streaming), since it needs nothing
but the batches; streaming data is read whole by every rank (each keeps its rows).

With equal shares, DDP's mean of the ranks' gradients is the gradient of the mean loss over the
global batch when every row holds the same number of target tokens (always, but for the padded
last block of a split), so P processes follow the curve of one process with P times the batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from rizzrun.errors import InputError


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the process group this process is in; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def share(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Rank `rank`'s rows of a batch: the `rank`-th of `world` near-equal parts of every tensor
    (and list) along its first dimension; other values are shared."""
    if world == 1:
        return batch
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            out[key] = value.tensor_split(world)[rank]
        elif isinstance(value, list):
            bounds = torch.arange(len(value)).tensor_split(world)[rank]
            out[key] = value[int(bounds[0]):int(bounds[-1]) + 1] if len(bounds) else []
        else:
            out[key] = value
    return out


class RankShard:
    """Loaders' views of a data component's global batches, for `processes` processes: each
    rank (read from the process group when iteration starts) sees its share of every batch."""

    def __init__(self, processes: int, rank: int | None = None):
        self.processes = int(processes)
        self.rank = rank  # None: this process's rank in the process group, read when iterating

    def _rank(self) -> int:
        if self.rank is not None:
            return self.rank
        rank, world = rank_and_world()
        if world != self.processes:
            raise RuntimeError(f"{self.processes} training processes expected, the process group has {world}")
        return rank

    def check_training_rows(self, rows: int, per_process: int) -> None:
        """Each process needs a row of every training batch: one InputError before training."""
        if self.processes > 1 and rows < self.processes:
            raise InputError(f"data.batch_size={per_process}: the training split holds {rows} blocks, fewer than the "
                             f"{self.processes} training processes; give more data or train on fewer devices")

    def stream(self, batches: Callable[..., Iterator[dict]], start: int) -> torch.utils.data.IterableDataset:
        """An IterableDataset of `batches(start=start)` (infinite, already batched), cut to this rank."""
        return _Stream(batches, start, self)

    def batches(self, batches: list[dict]) -> torch.utils.data.Dataset:
        """A map-style Dataset of a list of batches, each cut to this rank (a rank's cut may have no rows)."""
        return _Batches(batches, self)

    def take(self, batch: dict) -> dict:
        return batch if self.processes == 1 else share(batch, self._rank(), self.processes)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, batches, start: int, shard: RankShard):
        self.batches, self.start, self.shard = batches, start, shard

    def __iter__(self):
        return (self.shard.take(b) for b in self.batches(start=self.start))


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict], shard: RankShard):
        self.items, self.shard = batches, shard

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.shard.take(self.items[i])


def strategy_for(tcfg) -> Any:
    """The Lightning strategy for `trainer.strategy`: `fsdp` is `ShardedDataParallel` (on a CPU
    too); `auto`, `ddp` and any other name are handed to Lightning as given."""
    name = str(tcfg.strategy)
    return ShardedDataParallel() if name == "fsdp" else name


def shard_model(model: torch.nn.Module, mesh, mp_policy=None) -> None:
    """FSDP2 (`torch.distributed.fsdp.fully_shard`) over `mesh`: each transformer block is one
    unit (its parameters gathered for its forward and backward only), then the rest of the model
    (embeddings, final norm, head). Contract: a model lists its blocks as `model.blocks`. The model's
    other entry points that run its layers (`FORWARD_METHODS`: decoding steps for rollouts and shared
    prompts, hidden states for value heads) gather the parameters as `forward` does."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    kwargs = {"mesh": mesh, **({"mp_policy": mp_policy} if mp_policy is not None else {})}
    for block in getattr(model, "blocks", []):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    for name in FORWARD_METHODS:
        if callable(getattr(model, name, None)):
            register_fsdp_forward_method(model, name)


# A model's methods besides `forward` that read its parameters (rizzrun.models.llama.Llama, RWKV).
FORWARD_METHODS = ("step", "hidden_states")


class ShardedDataParallel(ModelParallelStrategy):
    """`trainer.strategy=fsdp`: Lightning's ModelParallelStrategy (FSDP2 over a 1-D device mesh
    of all processes: data parallel, parameters, gradients and optimizer state sharded; it also
    runs on a CPU with gloo, where Lightning's FSDPStrategy refuses), with checkpoints in the
    runner's own folder format: rank 0 gathers the full (unsharded) state and writes it through
    the CheckpointIO, so a checkpoint of a sharded run loads into an unsharded model and the
    other way round. The model is sharded by the task's `configure_model` (`shard_model`)."""

    def __init__(self, **kwargs):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=False,
                         **kwargs)

    def setup_environment(self) -> None:
        # All processes of all nodes shard one data-parallel dimension (Lightning's "auto" would
        # make nodes the data dimension and devices the tensor-parallel one).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict[str, Any]:
        """A full checkpoint folder (FolderCheckpointIO) into the sharded model and optimizers:
        each rank keeps its shard of the weights and of the optimizer state."""
        from lightning.fabric.strategies.model_parallel import _load_raw_module_state, _rekey_optimizer_state_if_needed
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        checkpoint = self.checkpoint_io.load_checkpoint(checkpoint_path)
        module = self.model
        _load_raw_module_state(checkpoint["state_dict"], module, strict=self.lightning_module.strict_loading)
        options = StateDictOptions(full_state_dict=True, strict=self.lightning_module.strict_loading)
        for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
            set_optimizer_state_dict(module, optimizer, optim_state_dict=_rekey_optimizer_state_if_needed(state, module),
                                     options=options)
        return checkpoint


def end_process_group() -> None:
    """Destroy the process group a run created, so that the next job of a sweep (same process)
    starts its own with its own ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
