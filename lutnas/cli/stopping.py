"""SIGTERM stops a command the way Ctrl-C does.

`kill`, `timeout 2h profile-device ...`, systemd and a cancelled CI job send SIGTERM, whose default
action ends the process where it stands: the store keeps every committed measurement (WAL), but the
run is never marked interrupted and nothing says how to resume. Raised as a KeyboardInterrupt
subclass, SIGTERM takes every command's Ctrl-C path instead (runs marked interrupted, stores and
devices closed, the resume line printed) and exits 143 (128 + 15, the shell's code for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled wherever Ctrl-C is, exit code EXIT_TERMINATED."""


# Set by SIGTERM within `stop_on_sigterm`: a loop that turns the interrupt into a result flag
# (profile-device's "interrupted" summary) still exits with the signal's own code.
_TERMINATED = threading.Event()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _TERMINATED.set()
    raise Terminated()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated in the main thread; the previous handler is put
    back after it (tests call `main` in-process). A SIGTERM the parent set to be ignored stays
    ignored, and outside the main thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(exc: KeyboardInterrupt | None = None) -> int:
    """EXIT_TERMINATED for SIGTERM (`exc` a Terminated, or one arrived since the block began),
    EXIT_INTERRUPTED for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) or _TERMINATED.is_set() else EXIT_INTERRUPTED
