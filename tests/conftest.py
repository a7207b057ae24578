"""Shared fixtures. Runs and caches go to temporary folders, never into the repository."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache folder for the whole session: the pydoc corpus is extracted once."""
    path = tmp_path_factory.mktemp("rizzrun-cache")
    os.environ["RIZZRUN_CACHE"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests: on a shared CPU a second thread only
    waits for the first (a (2, 1, 16) LayerNorm took 16 ms with 2 threads, 0.04 ms with 1).
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
