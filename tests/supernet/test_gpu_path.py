"""The GPU path's logic, checked on the CPU: precision policy, device choice, gradient accumulation,
EMA maths, exact resume with all of them on; and a `cuda` test that runs where a GPU is visible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lutnas.errors import BadInputError
from lutnas.supernet.amp import choose_amp, resolve_device, use_channels_last
from lutnas.supernet.checkpoint import load_checkpoint, load_supernet
from lutnas.supernet.ema import WeightEma
from lutnas.supernet.sampling import SandwichSampler
from lutnas.supernet.train import Reporter, TrainOptions, _Dist, _Run, train_supernet


def test_precision_policy_follows_the_device_capabilities() -> None:
    bf16 = choose_amp("cuda", True, bf16_supported=True)
    assert bf16.dtype == torch.bfloat16 and not bf16.scaler
    fp16 = choose_amp("cuda", True, bf16_supported=False)
    assert fp16.dtype == torch.float16 and fp16.scaler
    assert not choose_amp("cpu", True, bf16_supported=True).enabled
    assert not choose_amp("cuda", False, bf16_supported=True).enabled


def test_device_choice() -> None:
    assert resolve_device(None, cuda_available=False) == torch.device("cpu")
    assert resolve_device(None, 1, cuda_available=True) == torch.device("cuda", 1)
    assert resolve_device("cpu", cuda_available=True) == torch.device("cpu")
    with pytest.raises(BadInputError, match="--device cuda: no CUDA device"):
        resolve_device("cuda", cuda_available=False)
    assert use_channels_last(torch.device("cuda", 0), None)
    assert not use_channels_last(torch.device("cpu"), None)


def _run(tmp_path: Path, accum: int) -> _Run:
    options = TrainOptions(space="tiny", data="builtin:digits", out=str(tmp_path / f"a{accum}"),
                           batch_size=16, accum_steps=accum, sampler="sandwich", num_subnets=2,
                           grad_clip=0.0, seed=5, device="cpu")
    run = _Run(options, Reporter(), _Dist("cpu"), None, None)
    return run


def _grads_after_step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    run.train_step(x, y)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in run.params]


def _batch(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    items = [run.splits.train[i] for i in range(16)]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def test_accumulation_equals_the_bigger_batch(tmp_path: Path) -> None:
    """BN in eval mode (no coupling between samples): 2 micro-batches of 8 give the batch-16 gradient."""
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    for run in (one, two):
        run.model.eval()
        run.sampler = SandwichSampler(run.space, 2, seed=0)
    x, y = _batch(one)
    for a, b in zip(_grads_after_step(one, x, y), _grads_after_step(two, x, y)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_accumulation_in_train_mode_is_the_mean_of_micro_batch_gradients(tmp_path: Path) -> None:
    """With BN's batch statistics, each micro-batch normalises by its own: the accumulated gradient
    is the mean of the halves' gradients (what a batch of 8 per device would compute)."""
    runs = [_run(tmp_path / str(i), accum) for i, accum in enumerate((2, 1, 1))]
    for run in runs:
        run.sampler = SandwichSampler(run.space, 2, seed=0)
    x, y = _batch(runs[0])
    both = _grads_after_step(runs[0], x, y)
    first = _grads_after_step(runs[1], x[:8], y[:8])
    second = _grads_after_step(runs[2], x[8:], y[8:])
    for g, a, b in zip(both, first, second):
        torch.testing.assert_close(g, (a + b) / 2, atol=1e-6, rtol=1e-4)


def test_ema_follows_the_formula_and_restores_weights() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightEma(model, decay=0.9)
    expected = model.weight.detach().clone()
    for update in range(30):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        decay = min(0.9, (1 + update) / (10 + update))
        expected = decay * expected + (1 - decay) * model.weight.detach()
        ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], expected)
    raw = model.weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), expected)
    assert torch.equal(model.weight.detach(), raw)


def _options(out: Path, **overrides) -> TrainOptions:
    base = dict(space="tiny", data="builtin:digits", out=str(out), epochs=2, batch_size=8,
                steps_per_epoch=3, sampler="ca+pa", pool_size=10, calib_batches=1, eval_batch_size=256,
                seed=3, accum_steps=2, ema_decay=0.99, augment="on", mixup=0.5, cutmix=0.5)
    base.update(overrides)
    return TrainOptions(**base)


def test_resume_is_exact_with_augmentation_accumulation_and_ema(tmp_path: Path) -> None:
    full = train_supernet(_options(tmp_path / "full"))
    train_supernet(_options(tmp_path / "split", max_steps=4))
    second = train_supernet(_options(tmp_path / "split", resume=True))
    for step in (4, 5):
        assert second.step_losses[step] == full.step_losses[step]
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    for key, value in a["ema"]["shadow"].items():
        assert torch.equal(value, b["ema"]["shadow"][key]), key
    assert a["ema"]["updates"] == 6
    _, averaged = load_supernet(tmp_path / "full")
    _, raw = load_supernet(tmp_path / "full", use_ema=False)
    name = next(iter(a["ema"]["shadow"]))
    assert torch.equal(averaged.state_dict()[name], a["ema"]["shadow"][name])
    assert not torch.equal(averaged.state_dict()[name], raw.state_dict()[name])


def test_bad_accumulation_and_kd_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--accum-steps 3 must divide --batch-size 8"):
        _options(tmp_path, accum_steps=3).validate()
    with pytest.raises(BadInputError, match="--kd teacher needs at least one --teacher"):
        _options(tmp_path, kd="teacher").validate()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trains_in_bf16_or_fp16_with_channels_last(tmp_path: Path) -> None:
    torch.cuda.reset_peak_memory_stats()
    options = _options(tmp_path / "gpu", device="cuda", epochs=1, steps_per_epoch=4, workers=2)
    run = _Run(options, Reporter(), _Dist("cuda"), None, None)
    assert run.device.type == "cuda" and run.channels_last and run.amp.enabled
    assert run.amp.scaler == (not torch.cuda.is_bf16_supported())
    result = run.train()
    assert result.step == 4 and all(torch.isfinite(torch.tensor(list(result.step_losses.values()))))
    assert 0 < torch.cuda.max_memory_allocated() < 4 * 2**30
