"""Import litert-torch, the PyTorch -> .tflite converter, without its import-time noise.

Importing litert-torch imports torchao, which tries to load its C++ extensions and logs a warning for
each one that cannot load (here: a CUDA sm_90 kernel library and one built for CPython 3.10), and
torch logs a deprecation warning for an enum torchao registers. Neither is used by any conversion
lutnas runs (fp32 and int8 go through litert-torch's Python lowering and ai-edge-quantizer), yet
every command that exports printed six such lines, which read like failures. The loggers are
raised to ERROR for the import only, so later warnings still show.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType

# The loggers that speak at import: torchao's package logger ("Failed to load ..._C_*.so") and
# torch's pytree module ("<enum 'KernelPreference'> is an Enum subclass ...").
_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def litert_torch() -> ModuleType:
    """The `litert_torch` module, imported once with its import-time warnings silenced.

    Raises ImportError as the import itself would (the caller turns it into an ExportError)."""
    with _quiet(_IMPORT_LOGGERS):
        import litert_torch as module
    return module
