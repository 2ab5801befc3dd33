"""The retry and cool-down policy, and RunSettings' own validation: pure, no device."""

from __future__ import annotations

import numpy as np
import pytest

from lutnas.device_agents.base import RunSettings, parse_cores
from lutnas.device_agents.policy import CoolDown, TransientError, retry_transient
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
