"""Import litert-torch, the PyTorch -> .tflite converter, without its import-time noise.

Importing litert-torch imports torchao, which tries to load its C++ extensions and logs a warning for
each one that cannot load (here: a CUDA sm_90 kernel library and one built for CPython 3.10), and
torch logs a deprecation warning for an enum torchao registers. Neither is used by any conversion
lutnas runs (fp32 and int8 go through litert-torch's Python lowering and ai-edge-quantizer), yet
every command that exports printed six such lines, which read like failures. The loggers are
raised to ERROR for the import only, so later warnings still show. TensorFlow's C++ side (imported
by litert-torch) also logs at import, to fd 2 and past Python's logging ("oneDNN custom operations
are on", absl's "All log messages before absl::InitializeLog()"): two lines per export worker, 13
in one demo run; the first import runs with fds 1/2 captured (NativeOutput), written out only when
the import fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
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


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or detached stream has nothing to flush
            stream.flush()


class NativeOutput:
    """Capture what is written to fds 1/2 inside the block (the converter's C++ logging), for errors.

    `text` holds the captured bytes, decoded, once the block exits. Python's own sys.stdout/stderr
    are flushed on entry and exit, so text buffered before the block still reaches the terminal and
    text printed inside it is captured rather than written out later. Blocks nest: an inner block
    captures into its own `text` and hands fds 1/2 back to the outer one's capture."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> "NativeOutput":
        _flush_python_streams()
        self._sink = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(1), os.dup(2)
        os.dup2(self._sink.fileno(), 1)
        os.dup2(self._sink.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        _flush_python_streams()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._sink.seek(0)
        self.text = self._sink.read().decode(errors="replace")
        self._sink.close()

    def last_line(self) -> str:
        lines = [ln for ln in self.text.splitlines() if ln.strip()]
        return f" (converter said: {lines[-1][:200]})" if lines else ""


def litert_torch() -> ModuleType:
    """The `litert_torch` module, imported once with its import-time warnings silenced.

    Raises ImportError as the import itself would (the caller turns it into an ExportError); what
    the native side printed during a failed import goes to stderr first."""
    if "litert_torch" in sys.modules:
        return sys.modules["litert_torch"]
    native = NativeOutput()
    try:
        with _quiet(_IMPORT_LOGGERS), native:
            import litert_torch as module
    except Exception:  # not Ctrl-C: the captured import noise would bury the traceback
        sys.stderr.write(native.text)
        raise
    return module
