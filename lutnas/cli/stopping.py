"""SIGTERM stops a command the way Ctrl-C does.

`kill`, systemd and a cancelled CI job send SIGTERM, whose default action ends the process where it
stands: the store keeps every committed measurement (WAL), but the run is never marked interrupted
and nothing says how to resume. Raised as a KeyboardInterrupt subclass, SIGTERM takes every
command's Ctrl-C path instead (runs marked interrupted, stores and devices closed, the resume line
printed) and exits 143 (128 + 15, the shell's code for SIGTERM).
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


# Set by the first SIGTERM within `stop_on_sigterm`: a loop that turns the interrupt into a result
# flag (profile-device's "interrupted" summary) still exits with the signal's own code. A plain
# bool, not a threading.Event: a signal handler must not take a lock its own thread may hold.
_terminated = False


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    global _terminated
    # One-shot: `timeout` signals the child and then its whole group, torchrun and systemd may both
    # signal; a second Terminated raised inside the first one's cleanup would cut it short.
    if _terminated:
        return
    _terminated = True
    raise Terminated()


@contextlib.contextmanager
def stop_on_sigterm(enabled: bool = True) -> Iterator[None]:
    """Within the block the first SIGTERM raises Terminated in the main thread (later ones are
    ignored while the command stops); the previous handler is put back after it (tests call `main`
    in-process). A SIGTERM the parent set to be ignored stays ignored; outside the main thread
    (where Python cannot set handlers), or with `enabled` False, SIGTERM keeps its default."""
    global _terminated
    _terminated = False
    if not enabled or threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit_code() -> int:
    """EXIT_TERMINATED when a SIGTERM arrived since the block began (the handler sets the flag
    before it raises, so a Terminated always has it), else EXIT_INTERRUPTED (Ctrl-C)."""
    return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED
