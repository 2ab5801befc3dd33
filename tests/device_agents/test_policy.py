"""The retry and cool-down policy, and RunSettings' own validation: pure, no device."""

from __future__ import annotations

import numpy as np
import pytest

from lutnas.device_agents.base import RunSettings, parse_cores
from lutnas.device_agents.policy import (
    CoolDown,
    DeviceLostError,
    Reconnecting,
    TransientError,
    describe_failure,
    retry_transient,
)
from lutnas.errors import BadInputError, DeviceError


def test_transient_failures_are_retried_then_the_last_is_raised():
    calls, notices = [], []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 2:
            raise TransientError(f"dropped {attempt}")
        return "done"

    assert retry_transient(flaky, (0.0, 0.0, 0.0), lambda n, e: notices.append(str(e))) == "done"
    assert calls == [0, 1, 2] and notices == ["dropped 0", "dropped 1"]

    def always(attempt: int) -> None:
        raise TransientError(f"dropped {attempt}")

    with pytest.raises(TransientError, match="dropped 2"):
        retry_transient(always, (0.0, 0.0))


def test_a_failure_that_will_repeat_is_not_retried():
    calls = []

    def refused(attempt: int) -> None:
        calls.append(attempt)
        raise DeviceError("runner built for another ABI")

    with pytest.raises(DeviceError, match="ABI"):
        retry_transient(refused, (0.0, 0.0, 0.0))
    assert calls == [0]


class _Link:
    """A connection double for `Reconnecting`: counts opens and drops, fails the first `drops`
    commands with `error` (what a transport's library raises when the link drops)."""

    def __init__(self, drops: int, error: BaseException) -> None:
        self.open, self.opens, self.closes, self.drops, self.error = False, 0, 0, drops, error
        self.notices: list[str] = []

    def connect(self) -> None:
        self.open, self.opens = True, self.opens + 1

    def drop(self) -> None:
        self.open, self.closes = False, self.closes + 1

    def command(self) -> str:
        assert self.open, "a command ran without a connection"
        if self.drops:
            self.drops -= 1
            raise self.error
        return "output"

    def calls(self, transient: tuple[type[BaseException], ...] = (OSError,)) -> Reconnecting:
        return Reconnecting("phone:5555", lambda: self.open, self.connect, self.drop, transient,
                            self.notices.append)


def test_a_dropped_command_is_reconnected_and_retried():
    link = _Link(drops=2, error=ConnectionResetError("peer closed"))
    assert link.calls().call("shell command", link.command, 3, "(timeout 5 s)") == "output"
    assert (link.opens, link.closes) == (3, 2)  # connected once, reopened after each drop
    assert link.notices == ["phone:5555: shell command: ConnectionResetError: peer closed; reconnecting"] * 2


def test_a_command_that_keeps_dropping_is_a_lost_device():
    link = _Link(drops=5, error=TimeoutError())
    with pytest.raises(DeviceLostError) as lost:
        link.calls().call("push of m.tflite", link.command, 3, "(timeout 5 s); the board stopped answering")
    assert str(lost.value) == ("phone:5555: push of m.tflite failed 3 times, last with TimeoutError: "
                               "timed out (timeout 5 s); the board stopped answering")
    assert (link.opens, link.closes, link.drops) == (3, 3, 2) and len(link.notices) == 2


def test_an_error_outside_the_transient_ones_is_not_retried():
    link = _Link(drops=1, error=DeviceError("key rejected"))
    with pytest.raises(DeviceError, match="key rejected"):
        link.calls().call("shell command", link.command, 3, "")
    assert (link.opens, link.closes, link.notices) == (1, 0, [])


def test_describe_failure_names_the_type_and_a_bare_timeout():
    assert describe_failure(OSError("no route")) == "OSError: no route"
    assert describe_failure(TimeoutError()) == "TimeoutError: timed out"
    assert describe_failure(ConnectionResetError()) == "ConnectionResetError"


def test_cool_down_waits_while_hot_and_notes_it():
    readings, said = iter([70.0, 60.0, 44.0]), []
    waited = CoolDown(max_temp_c=45, poll_s=0.0).wait(lambda: next(readings), said.append, "phone")
    assert waited is not None and waited.from_c == 70.0 and "cool from 70.0 °C to 45 °C" in waited.note()
    assert said and "70.0 °C is above 45" in said[0]
    assert CoolDown(max_temp_c=45).wait(lambda: 30.0, said.append, "phone") is None
    assert CoolDown(max_temp_c=None).wait(lambda: 99.0, said.append, "phone") is None


def test_cool_down_gives_up_after_its_longest_wait():
    said = []
    waited = CoolDown(max_temp_c=45, poll_s=0.0, max_wait_s=0.0).wait(lambda: 80.0, said.append, "phone")
    assert waited is not None and any("measuring anyway" in s for s in said)


@pytest.mark.parametrize("kwargs,flag", [
    (dict(runtime="tensorrt"), "unknown runtime"), (dict(threads=0), "--threads"),
    (dict(threads=1.5), "--threads"), (dict(runs=0), "--runs"), (dict(warmup=-1), "--warmup"),
    (dict(cores=()), "--cores"), (dict(cores=(-1,)), "--cores"), (dict(accelerator="tpu"), "accelerator"),
])
def test_run_settings_refuse_bad_values_when_constructed(kwargs, flag):
    with pytest.raises(BadInputError, match=flag) as info:
        RunSettings(**kwargs)
    assert "\n" not in str(info.value)


def test_run_settings_normalise_cores_and_integers():
    settings = RunSettings(threads=np.int64(2), cores=(3, 1, 1))
    assert settings.cores == (1, 3) and settings.core_mask == "0xa" and type(settings.threads) is int
    assert settings == RunSettings(threads=2, cores=(1, 3))


def test_parse_cores():
    assert parse_cores("0") == (0,) and parse_cores("4-7") == (4, 5, 6, 7)
    assert parse_cores("2,0,1-2") == (0, 1, 2)
    for text in ("x", "1,,2", "-1", "3-1"):
        with pytest.raises(BadInputError, match="--cores"):
            parse_cores(text)
