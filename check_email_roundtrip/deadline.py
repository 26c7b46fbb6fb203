"""The ``-t`` budget: one clock for the whole run.

Two layers keep a run inside ``-t`` (the conventions ask that every socket
time out before the global alarm, so that a hung server is reported with its
real cause):

1. every socket operation gets ``socket_timeout()``: what is left of the
   budget minus a margin, so a silent server ends as a CRITICAL ProbeError
   ("no reply within N s") naming its phase;
2. a SIGALRM timer at the budget itself raises :class:`RunTimeout` naming the
   stage the probe was in: the safety net for a server that drips bytes
   slowly enough to keep every single read alive.

We do not use nagiosplugin's own ``timeout=``: its alarm has whole-second
resolution, and what it raises is printed as a bare "Timeout" (with a
traceback at ``-v``) that cannot say which stage hung.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any, Callable

from .errors import Phase, RunTimeout

# How much earlier than the -t budget a socket gives up, so its own error
# (with the server's phase and cause) wins over the global alarm.
SOCKET_MARGIN = 0.5
# A socket timeout never goes below this, even when the budget is nearly gone.
MIN_SOCKET_TIMEOUT = 0.1


class Deadline:
    """The end of the run's time budget, and the stage the probe is in."""

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic):
        self.budget = budget
        self._clock = clock
        self.started = clock()
        self.ends = self.started + budget
        self.stage: Phase = Phase.SMTP_CONNECT

    def enter(self, stage: Phase) -> None:
        self.stage = stage

    def remaining(self) -> float:
        return self.ends - self._clock()

    def socket_timeout(self, cap: float | None = None) -> float:
        left = self.remaining() - SOCKET_MARGIN
        if cap is not None:
            left = min(left, cap)
        return max(left, MIN_SOCKET_TIMEOUT)

    def check(self) -> None:
        """Raise RunTimeout if the budget is spent (for loops that sleep)."""
        if self.remaining() <= 0:
            raise RunTimeout(self.stage, self.budget)

    # The alarm: armed for the duration of the probe only.
    def __enter__(self) -> Deadline:
        def on_alarm(signum: int, frame: FrameType | None) -> None:
            raise RunTimeout(self.stage, self.budget)

        self._previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining(), 0.001))
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
