"""Supernet tests run torch on one thread: on the 2 shared cores of CI, two OpenMP threads competing
with other processes made a depthwise conv 100x slower (25 ms instead of 0.2 ms)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
