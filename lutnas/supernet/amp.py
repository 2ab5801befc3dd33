"""Device, mixed precision and memory-format choices of the trainer, as pure functions of the host.

bf16 autocast where the GPU has it (Ampere and later): bf16 has fp32's exponent range, so gradients
cannot underflow and no loss scaling is needed. Older GPUs get fp16 autocast with a GradScaler. The
CPU trains in fp32: CPU autocast to bf16 is slower than fp32 on the hosts this runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lutnas.errors import BadInputError

DEVICES = ("cuda", "cpu")


@dataclass(frozen=True)
class AmpPolicy:
    """`dtype` None: no autocast. `scaler`: whether losses go through a GradScaler (fp16 only)."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self, device_type: str) -> torch.autocast:
        return torch.autocast(device_type=device_type, dtype=self.dtype or torch.float32,
                              enabled=self.enabled)


def choose_amp(device_type: str, requested: bool, bf16_supported: bool) -> AmpPolicy:
    """The precision policy for a device: bf16 when supported, else fp16 + scaler; none on CPU."""
    if not requested or device_type != "cuda":
        return AmpPolicy(None, False)
    if bf16_supported:
        return AmpPolicy(torch.bfloat16, False)
    return AmpPolicy(torch.float16, True)


def amp_policy(device: torch.device, requested: bool) -> AmpPolicy:
    """`choose_amp` with this host's capabilities."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_amp(device.type, requested, bf16)


def resolve_device(requested: str | None, local_rank: int = 0, cuda_available: bool | None = None
                   ) -> torch.device:
    """The training device: `requested` ("cuda" | "cpu"), or cuda when available and None given.

    Raises BadInputError when cuda is asked for on a host without a visible GPU."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested not in (None, *DEVICES):
        raise BadInputError(f"--device {requested!r} is not one of {', '.join(DEVICES)}")
    if requested == "cuda" and not available:
        raise BadInputError("--device cuda: no CUDA device is visible here; use --device cpu "
                            "(or check CUDA_VISIBLE_DEVICES and the driver)")
    if requested == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def use_channels_last(device: torch.device, requested: bool | None) -> bool:
    """channels_last by default on CUDA only: cuDNN's NHWC kernels are faster there (tensor cores);
    on the CPU the depthwise convolutions of these nets run slower in NHWC."""
    return device.type == "cuda" if requested is None else requested


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning: each subnet resolution and width recurs thousands of times, so the one-off
    search per shape pays for itself; TF32 matmuls for what autocast leaves in fp32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
