"""Trainer: resume equality, a 2-process torchrun run, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lutnas.cli import main
from lutnas.supernet.checkpoint import load_checkpoint
from lutnas.supernet.data import load_data
from lutnas.supernet.train import (
    TrainOptions,
    evaluate_top1,
    heldout_loader,
    load_supernet,
    train_supernet,
)

REPO = Path(__file__).resolve().parents[2]


def _options(out: Path, **overrides) -> TrainOptions:
    base = dict(space="tiny", data="builtin:digits", out=str(out), epochs=2, batch_size=8,
                steps_per_epoch=3, sampler="ca+pa", pool_size=10, calib_batches=1,
                eval_batch_size=256, seed=3)
    base.update(overrides)
    return TrainOptions(**base)


def test_resume_gives_the_same_next_steps(tmp_path: Path) -> None:
    full = train_supernet(_options(tmp_path / "full"))
    # Stop mid-epoch (step 4 of 6), then resume: steps 4 and 5 and the final weights must match.
    first = train_supernet(_options(tmp_path / "split", max_steps=4))
    assert first.step == 4 and sorted(first.step_losses) == [0, 1, 2, 3]
    second = train_supernet(_options(tmp_path / "split", resume=True))
    assert sorted(second.step_losses) == [4, 5]
    for step in (4, 5):
        assert second.step_losses[step] == full.step_losses[step]
    a, meta_a = load_checkpoint(tmp_path / "full")
    b, meta_b = load_checkpoint(tmp_path / "split")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert meta_a["sampler"] == meta_b["sampler"]  # bucket walk, pools and banks survive resume
    assert any(meta_a["sampler"]["banks"])
    assert meta_a["rows"] == [
        {**row, "seconds": meta_a["rows"][i]["seconds"]} for i, row in enumerate(meta_b["rows"])
    ]
    log = (tmp_path / "split" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch,step,train_loss")

    # What the search engineer uses: load the run, score a subnet on the held-out split.
    space, supernet = load_supernet(tmp_path / "full")
    splits = load_data("builtin:digits", max(space.resolutions))
    from lutnas.supernet.data import calibration_loader
    top1 = evaluate_top1(supernet, space.largest(), heldout_loader("builtin:digits", space),
                         calibration_loader(splits.train, 16, 2), 2)
    assert 0.0 <= top1 <= 1.0
    # Held-out and training images are disjoint.
    train_keys = {tuple(x.flatten()[:64:7].tolist()) for x, _ in [splits.train[i] for i in range(50)]}
    held = {tuple(x.flatten()[:64:7].tolist()) for x, _ in [splits.heldout[i] for i in range(50)]}
    assert len(splits.heldout) > 300 and len(train_keys) > 1 and len(held) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_trains_the_same_subnets_on_every_rank(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUTNAS_SUBNET_TRACE": str(trace)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "lutnas", "train-supernet", "--space", "tiny", "--data", "builtin:digits",
               "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8", "--sampler", "ca+pa",
               "--pool-size", "10", "--calib-batches", "1", "--threads", "1",
               "--out", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[json.loads(line) for line in (trace / f"rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(ranks[0]) == 3 and ranks[0] == ranks[1]
    tensors, meta = load_checkpoint(tmp_path / "run")
    assert meta["world_size"] == 2 and meta["step"] == 3
    assert all(torch.isfinite(v).all() for v in tensors["model"].values() if v.is_floating_point())


def test_bad_data_path_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train-supernet", "--space", "tiny", "--data", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no such directory" in err and "builtin:digits" in err


def test_image_folder_without_val_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "imgs" / "train" / "cat").mkdir(parents=True)
    code = main(["train-supernet", "--space", "tiny", "--data", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "val/" in err


def test_config_outside_the_space_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    import lutnas.space as space_module

    bad = space_module.SearchSpace.load("tiny").largest().to_dict()
    bad["stages"][0]["width"] = 999
    code = main(["train-supernet", "--space", "tiny", "--data", "builtin:digits",
                 "--out", str(tmp_path / "o"), "--eval-config", json.dumps(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "width=999" in err and "stage1" in err


def test_resume_without_checkpoint_and_latency_without_table(tmp_path: Path, capsys) -> None:
    code = main(["train-supernet", "--space", "tiny", "--data", "builtin:digits",
                 "--out", str(tmp_path / "o"), "--resume"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err
    code = main(["train-supernet", "--space", "tiny", "--data", "builtin:digits",
                 "--out", str(tmp_path / "o"), "--buckets", "latency"])
    assert code == 2 and "--table" in capsys.readouterr().err


def test_image_folder_tree_trains(tmp_path: Path) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label, name in enumerate(("dark", "light")):
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for index in range(6):
                pixels = (torch.rand(20, 24, 3, generator=generator) * 100 + 120 * label).byte()
                Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    splits = load_data(str(tmp_path / "imgs"), 48)
    x, y = splits.train[7]
    assert x.shape == (3, 48, 48) and int(y) == 1 and splits.num_classes == 2
    assert splits.heldout is splits.val  # no test/ folder: val is the held-out split
    result = train_supernet(_options(tmp_path / "out", data=str(tmp_path / "imgs"), epochs=1,
                                     steps_per_epoch=2, batch_size=4, sampler="sandwich"))
    assert result.step == 2 and len(result.rows) == 1


def test_latency_buckets_from_a_lookup_table(tmp_path: Path) -> None:
    """`--buckets latency --table T` through the real table file and LutPredictor.

    The table's values are per-block memory traffic scaled to milliseconds (measuring all of tiny's
    blocks would take minutes): what is tested is that buckets and walk follow the predictor.
    """
    import math

    import pandas as pd

    from lutnas.device_agents.base import DeviceInfo
    from lutnas.predictors.lut import LutPredictor
    from lutnas.space import SearchSpace
    from lutnas.tables.table import COLUMNS, LatencyTable

    space = SearchSpace.load("tiny")
    specs = space.unique_blocks()
    from lutnas.space import block_complexity

    ms = {s.key: block_complexity(s).bytes_moved / 1e7 for s in specs}
    frame = pd.DataFrame(index=pd.Index(sorted(ms), name="key"), columns=list(COLUMNS))
    frame["median_ms"] = [ms[k] for k in frame.index]
    for column in ("mean_ms", "min_ms", "p90_ms"):
        frame[column] = frame["median_ms"]
    frame["std_ms"], frame["cv"], frame["trials"] = 0.0, math.nan, 3
    frame["flag"], frame["source"], frame["operator_ms"] = "unrated", "measured", None
    frame["kind"] = [k.partition(":")[0] for k in frame.index]
    device = DeviceInfo(device_id="synthetic", kind="host", model="synthetic")
    settings = {"device_id": "synthetic", "runtime": "onnxruntime", "threads": 1, "core_mask": "all",
                "accelerator": "cpu"}
    table_path = LatencyTable(frame, device, settings, "tiny", {"correction": None}).save(
        tmp_path / "t.parquet")
    predictor = LutPredictor.load(table_path, space)
    result = train_supernet(_options(tmp_path / "run", buckets="latency", table=str(table_path),
                                     epochs=1, steps_per_epoch=2, sampler="ca"),
                            latency_ms=predictor.predict)
    _, meta = load_checkpoint(result.out)
    state = meta["sampler"]
    low, high = predictor.predict([space.smallest(), space.largest()])
    assert state["cost_name"] == "ms" and state["edges"][-1] == pytest.approx(high)
    index = state["bucket_index"]
    from lutnas.space import SubnetConfig
    pool = [SubnetConfig.from_dict(c) for c in state["pools"][index]]
    lower = state["edges"][index - 1] if index else low - 1
    assert all(lower < v <= state["edges"][index] * (1 + 1e-9) for v in predictor.predict(pool))


def test_distillation_losses() -> None:
    from lutnas.supernet.train import kd_loss

    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 10, generator=generator)
    student = torch.randn(8, 10, generator=generator)
    kl = kd_loss(student, teacher, "kl")
    expected = torch.nn.functional.kl_div(torch.log_softmax(student, -1), torch.softmax(teacher, -1),
                                          reduction="batchmean")
    torch.testing.assert_close(kl, expected)
    alpha = kd_loss(student, teacher, "alpha")
    assert alpha >= kl > 0
    assert kd_loss(teacher, teacher, "alpha").abs() < 1e-6 and kd_loss(teacher, teacher, "kl").abs() < 1e-6


def test_progress_prints_plain_lines_when_not_on_a_terminal(monkeypatch, capsys) -> None:
    # a pipe or log file gets no live bar: without these lines, minutes pass between epoch lines
    from lutnas.cli import train as train_cli

    monkeypatch.setattr(train_cli, "LOG_EVERY_S", 0.0)
    reporter = train_cli._ProgressReporter()
    reporter.start(total_steps=10, start_step=0)
    reporter.step(3, loss=1.25, lr=0.01)
    reporter.finish()
    assert "step 3/10  loss 1.250  lr 1.00e-02" in capsys.readouterr().out
