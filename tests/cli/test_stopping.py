"""SIGTERM takes Ctrl-C's path in every command (lutnas.cli.stopping), in this process."""

from __future__ import annotations

import os
import signal

import pytest

from lutnas.cli.stopping import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    interrupted_exit_code,
    stop_on_sigterm,
)


def test_the_first_sigterm_raises_terminated_a_second_is_ignored_and_the_old_handler_is_back():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Terminated), stop_on_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:  # `timeout` signals the child, then its group: the cleanup is not cut short
            os.kill(os.getpid(), signal.SIGTERM)
            cleaned.append(True)
    assert cleaned == [True]
    assert interrupted_exit_code() == EXIT_TERMINATED  # a loop that swallowed the interrupt: 143
    assert signal.getsignal(signal.SIGTERM) == before
    with stop_on_sigterm():  # a new command starts without the last one's SIGTERM
        assert interrupted_exit_code() == EXIT_INTERRUPTED


def test_an_ignored_sigterm_stays_ignored_and_a_disabled_block_changes_nothing():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with stop_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)  # nothing happens
    finally:
        signal.signal(signal.SIGTERM, previous)
    with stop_on_sigterm(enabled=False):  # train-supernet: torchrun expects its workers to die
        assert signal.getsignal(signal.SIGTERM) == previous
