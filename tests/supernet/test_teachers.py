"""External teachers: TorchScript, a weights-only state dict with a registered name, a supernet run;
mean of teachers; and training that distils from them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from lutnas.errors import BadInputError
from lutnas.space import SearchSpace
from lutnas.supernet.teachers import ConvNet, load_teacher, mean_of_teachers, save_teacher
from lutnas.supernet.train import TrainOptions, train_supernet


def _convnet() -> ConvNet:
    torch.manual_seed(0)
    model = ConvNet(10, width=8, depth=2)
    with torch.no_grad():  # non-trivial BN statistics, which a state dict must carry
        model.features[1].running_mean.uniform_(-0.5, 0.5)
    return model.eval()


def test_state_dict_teacher_round_trips(tmp_path: Path) -> None:
    model = _convnet()
    path = save_teacher(tmp_path / "t.pt", "convnet", model, num_classes=10, width=8, depth=2)
    loaded = load_teacher(path)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_torchscript_teacher(tmp_path: Path) -> None:
    model = _convnet()
    torch.jit.save(torch.jit.script(model), tmp_path / "t.ts")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_teacher(tmp_path / "t.ts")(x), model(x))


def test_a_pickled_module_is_refused_not_executed(tmp_path: Path) -> None:
    torch.save(_convnet(), tmp_path / "whole.pt")  # a pickled nn.Module: weights_only refuses it
    with pytest.raises(BadInputError, match="not a TorchScript file nor a weights-only"):
        load_teacher(tmp_path / "whole.pt")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"format": "x"}))
    with pytest.raises(BadInputError, match="--teacher"):
        load_teacher(tmp_path / "p.pkl")
    with pytest.raises(BadInputError, match="no such file"):
        load_teacher(tmp_path / "missing.pt")


def test_mean_of_teachers_is_the_mean_of_probabilities() -> None:
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    mean = mean_of_teachers([a, b])
    torch.testing.assert_close(mean.exp(), (a.softmax(-1) + b.softmax(-1)) / 2)
    torch.testing.assert_close(mean_of_teachers([a]), a)


def test_training_distils_from_external_teachers(tmp_path: Path) -> None:
    space = SearchSpace.load("tiny")
    state_file = save_teacher(tmp_path / "cnn.pt", "convnet", _convnet(), resolution=32,
                              num_classes=10, width=8, depth=2)
    script_file = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.script(_convnet()), script_file)
    base = dict(space="tiny", data="builtin:digits", epochs=1, steps_per_epoch=2, batch_size=8,
                sampler="uniform", calib_batches=1, seed=1)
    first = train_supernet(TrainOptions(out=str(tmp_path / "a"), kd="teacher",
                                        teachers=[str(state_file), str(script_file)], **base))
    second = train_supernet(TrainOptions(out=str(tmp_path / "b"), kd="mean",
                                         teachers=[str(tmp_path / "a")], **base))
    assert first.step == second.step == 2 and max(space.resolutions) == 48
    assert all(torch.isfinite(torch.tensor(v)) for v in first.step_losses.values())
    # A supernet run directory is a teacher too (its largest subnet).
    teacher = load_teacher(tmp_path / "a")
    assert teacher(torch.randn(2, 3, 48, 48)).shape == (2, 10)
