"""Fixtures of the search tests: a latency table whose values come from complexity (synthetic, so
tests run in seconds and no test depends on host timing), and a supernet trained for a few steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lutnas.device_agents.base import DeviceInfo
from lutnas.space import SearchSpace, block_complexity
from lutnas.tables.table import COLUMNS, LatencyTable


def synthetic_table(space: SearchSpace, path: Path, drop: int = 0) -> Path:
    """A table for every block of `space`: 20 us per block + MACs at 2 GMAC/s + bytes at 4 GB/s."""
    rows = {}
    for spec in space.unique_blocks():
        cost = block_complexity(spec)
        ms = 0.02 + cost.macs / 2e6 + cost.bytes_moved / 4e6
        rows[spec.key] = {"median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "p90_ms": ms,
                          "trials": 3, "cv": 0.0, "flag": "settled", "kind": spec.kind,
                          "source": "measured", "operator_ms": None}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(COLUMNS))
    if drop:
        frame = frame.iloc[drop:]
    device = DeviceInfo(device_id="synthetic-complexity", kind="host", model="complexity model")
    settings = {"device_id": device.device_id, "runtime": "onnxruntime", "threads": 1,
                "core_mask": "all", "accelerator": "cpu", "warmup": 2, "runs": 5}
    table = LatencyTable(frame, device, settings, space.name, {"correction": None})
    table.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory: pytest.TempPathFactory, tiny_space: SearchSpace) -> Path:
    return synthetic_table(tiny_space, tmp_path_factory.mktemp("tables") / "tiny-synthetic.parquet")


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory: pytest.TempPathFactory, tiny_space: SearchSpace) -> Path:
    """A tiny supernet checkpoint (train-supernet's format) after 12 plain SGD steps on random
    subnets: enough for subnets to differ in accuracy, in seconds rather than a training run."""
    import random

    import torch
    import torch.nn.functional as F

    from lutnas.supernet.checkpoint import save_checkpoint, space_record
    from lutnas.supernet.data import load_data, resize_batch
    from lutnas.supernet.model import Supernet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 10-30x faster than 2 threads on the busy 2-core CI host
    torch.manual_seed(0)
    model = Supernet(tiny_space).train()
    splits = load_data("builtin:digits", max(tiny_space.resolutions), tiny_space.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    for step, (x, y) in enumerate(loader):
        if step == 12:
            break
        config = tiny_space.sample(rng)
        loss = F.cross_entropy(model.set_active(config)(resize_batch(x, config.resolution)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("supernet") / "run"
    save_checkpoint(out, {"model": model.state_dict()}, {"space": space_record(tiny_space), "step": 12})
    return out


@pytest.fixture
def one_torch_thread():
    """Supernet evaluation in this process with one thread (the search CLI's default), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
