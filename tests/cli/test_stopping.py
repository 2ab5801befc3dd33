"""SIGTERM takes Ctrl-C's path in every command (lutnas.cli.stopping), in this process."""

from __future__ import annotations

import os
import signal

import pytest

from lutnas.cli.stopping import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, exit_code, stop_on_sigterm


def test_sigterm_raises_terminated_inside_and_the_old_handler_is_back_after():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
    assert exit_code() == EXIT_TERMINATED  # a loop that swallowed the interrupt still exits 143
    assert signal.getsignal(signal.SIGTERM) == before
    with stop_on_sigterm():  # a new command starts without the last one's SIGTERM
        assert exit_code() == EXIT_INTERRUPTED
        assert exit_code(KeyboardInterrupt()) == EXIT_INTERRUPTED


def test_an_ignored_sigterm_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with stop_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)  # nothing happens
    finally:
        signal.signal(signal.SIGTERM, previous)
