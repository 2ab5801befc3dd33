"""When to try again and when to wait: the retry and cool-down policy of every device agent.

The rule (DESIGN.md, "Measurement rules"): a failure that will repeat (a missing runner, a file the
device refuses, a key it does not trust) is reported once and never retried; a transient one (a
dropped connection, a timeout) is retried with back-off. Transports decide which is which when
they translate their library's exceptions: a transient failure is raised as `TransientError`,
anything else as the error it is. This module only runs the policy: how often, how long between
tries, and how long to let a hot device cool before measuring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from lutnas.errors import DeviceError

T = TypeVar("T")


class TransientError(DeviceError):
    """A failure that may not repeat (disconnect, timeout): worth another try after a pause."""


class DeviceLostError(DeviceError):
    """Retries of a transient failure ran out: the device stopped answering."""


# Appended to a failed measurement's status when the failure will repeat (exit 126/127, a missing
# op, a delegate that is not applied, a model the runtime rejects): the profiling loop does not
# retry such a key, it ends failed with this status.
DETERMINISTIC_MARK = " [deterministic: not retried]"


def mark_deterministic(error: str) -> str:
    """`error` marked as a failure that will repeat (once)."""
    return error if error.endswith(DETERMINISTIC_MARK) else error + DETERMINISTIC_MARK


def is_deterministic(status: str) -> bool:
    """True when a failed measurement's status says its failure will repeat."""
    return status.endswith(DETERMINISTIC_MARK)


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently a transport retries transient failures.

    `reconnect_delays_s`: pauses before the 2nd, 3rd, ... connection attempt (so 1 + its length
    attempts). `command_attempts`: tries of one command, reconnecting (with the pauses above)
    in between.
    """

    reconnect_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    command_attempts: int = 3

    @property
    def connect_attempts(self) -> int:
        return 1 + len(self.reconnect_delays_s)


def retry_transient(action: Callable[[int], T], delays_s: Sequence[float],
                    on_retry: Callable[[int, TransientError], None] | None = None) -> T:
    """`action(attempt)` until it returns, pausing `delays_s[i]` before attempt i + 1.

    Only `TransientError` is retried; any other exception (a failure that will repeat) propagates
    at once. After 1 + len(delays_s) transient failures the last one is raised; the caller turns
    it into a `DeviceLostError` that says what was tried. `on_retry(attempt, error)` is called
    before each new attempt (for a notice).
    """
    for attempt, delay in enumerate((0.0, *delays_s)):
        time.sleep(delay)
        try:
            return action(attempt)
        except TransientError as exc:
            if attempt == len(delays_s):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
    raise AssertionError("unreachable")


def describe_failure(exc: BaseException) -> str:
    """`Type: message` of a library's exception; a bare timeout (empty message) says so."""
    text = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Reconnecting:
    """How a transport runs one command over a connection that may drop, per `RetryPolicy`.

    `connected`: whether a connection is open; `connect`: open one (it has its own back-off and
    raises `DeviceLostError` when that runs out); `drop`: forget a connection that failed, so the
    next attempt reopens it; `transient`: the library's exceptions that mean the connection dropped
    or stuck (anything else propagates at once); `say`: where the "reconnecting" notice goes.
    """

    address: str  # how notices and errors name the device
    connected: Callable[[], bool]
    connect: Callable[[], None]
    drop: Callable[[], None]
    transient: tuple[type[BaseException], ...]
    say: Callable[[str], None]

    def call(self, what: str, action: Callable[[], T], attempts: int, lost_detail: str) -> T:
        """`action()` (connecting first when needed), retried `attempts` times in all when it
        raises a transient exception, the connection reopened in between.

        `what` names the command in notices ("shell command"); `lost_detail` ends the
        `DeviceLostError` raised when every attempt failed, e.g. "(timeout 300 s); the board
        stopped answering"."""

        def attempt(_attempt: int) -> T:
            if not self.connected():
                self.connect()
            try:
                return action()
            except self.transient as exc:
                self.drop()
                raise TransientError(describe_failure(exc)) from exc

        def on_retry(_attempt: int, exc: TransientError) -> None:
            self.say(f"{self.address}: {what}: {exc}; reconnecting")

        try:
            return retry_transient(attempt, (0.0,) * (attempts - 1), on_retry)
        except TransientError as exc:
            raise DeviceLostError(f"{self.address}: {what} failed {attempts} times, last with {exc} "
                                  f"{lost_detail}") from exc


@dataclass(frozen=True)
class CoolDown:
    """Wait while the device's hottest CPU zone is above `max_temp_c` (None: never wait).

    Polls every `poll_s`; after `max_wait_s` it measures anyway and says so, since a device that
    never cools (a phone in the sun) must not stall a run forever.
    """

    max_temp_c: float | None = 45.0
    poll_s: float = 5.0
    max_wait_s: float = 900.0

    def wait(self, hottest_c: Callable[[], float | None], say: Callable[[str], None],
             where: str) -> "Waited | None":
        """Poll `hottest_c()` (°C, None when unknown) until it is cool enough; None if no wait."""
        if self.max_temp_c is None:
            return None
        started = time.monotonic()
        first: float | None = None
        while True:
            hottest = hottest_c()
            if hottest is None or hottest <= self.max_temp_c:
                break
            first = hottest if first is None else first
            waited = time.monotonic() - started
            if waited >= self.max_wait_s:
                say(f"{where}: still {hottest:.1f} °C after {waited:.0f} s; measuring anyway")
                break
            if waited == 0 or int(waited) % 60 == 0:
                say(f"{where}: {hottest:.1f} °C is above {self.max_temp_c:g} °C; waiting for it to "
                    "cool")
            time.sleep(self.poll_s)
        if first is None:
            return None
        return Waited(time.monotonic() - started, first, self.max_temp_c)


@dataclass(frozen=True)
class Waited:
    """One cool-down wait: how long, from which temperature, to which bound."""

    seconds: float
    from_c: float
    bound_c: float

    def note(self) -> str:
        """A line for the measurement's raw output, so a reader sees the wait."""
        return (f"# lutnas: waited {self.seconds:.1f} s for the hottest CPU zone to cool from "
                f"{self.from_c:.1f} °C to {self.bound_c:g} °C\n")
