"""The converter imports without printing warnings that read like failures, and leaves logging as it was."""

import subprocess
import sys

SCRIPT = """
import logging
from lutnas.profiler import converter
module = converter.litert_torch()
assert module.__name__ == "litert_torch", module
for name in ("torchao", "torch.utils._pytree"):
    assert logging.getLogger(name).level == logging.NOTSET, name
"""


def test_importing_the_converter_prints_nothing():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # Before: "Failed to load .../torchao/_C_mxfp8...so" and "<enum 'KernelPreference'> is an Enum ..."
    assert "Failed to load" not in done.stderr
    assert "KernelPreference" not in done.stderr
    assert done.stdout == ""
