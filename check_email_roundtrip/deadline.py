"""The ``-t`` budget and the step limit: one clock for the whole run.

``-t`` is the hard bound of the whole process, counted from its start (the
first thing ``__main__`` does is note the time), so the seconds Python needs
to start count too.  Inside it, every network step (resolve, connect, TLS
handshake, one command and its reply, the token request) has its own limit,
``--step-timeout`` (never more than what is left of ``-t``), separate from how
long the probe waits for delivery.  Three layers keep to them:

1. every step gets ``step_ends()``: now + the step limit, capped at the end
   of the budget minus a margin; the session gives each socket read what is
   left of that, and stops a reply that does not end by then, so a silent or
   dripping server ends as a CRITICAL ProbeError naming its step;
2. a SIGALRM at the budget raises :class:`RunTimeout` naming the stage the
   probe was in, wherever the code is (SIGTERM raises :class:`Interrupted`
   the same way): the safety net;
3. after that, clean-up (LOGOUT, QUIT, the state file) gets ``GRACE`` seconds
   in all, never more.

We do not use nagiosplugin's own ``timeout=``: its alarm has whole-second
resolution, and what it raises is printed as a bare "Timeout" that cannot
say which stage hung.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import Interrupted, Phase, RunTimeout

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

# How much earlier than the -t budget a step gives up, so its own error
# (with the server's phase and cause) wins over the global alarm.
SOCKET_MARGIN = 0.5
# A socket timeout never goes below this, even when the budget is nearly gone.
MIN_SOCKET_TIMEOUT = 0.1
# Clean-up after the budget ran out (or after SIGTERM) gets this much, in all.
GRACE = 0.5
# The default of --step-timeout.
DEFAULT_STEP_TIMEOUT = 30.0


class Deadline:
    """The end of the run's time budget, the step limit, and the stage the probe is in."""

    def __init__(
        self,
        budget: float,
        started: float | None = None,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.budget = budget
        self.step_timeout = step_timeout
        self._clock = clock
        self.started = clock() if started is None else started
        self.ends = self.started + budget
        self.expired = False  # the alarm or a signal struck: only clean-up is left
        # the stage of each thread (IMAP signs in beside SMTP), and the thread
        # the main one waits for, if any
        self._stages: dict[int, Phase] = {}
        self._main = threading.get_ident()
        self._awaited: int | None = None

    def enter(self, stage: Phase) -> None:
        self._stages[threading.get_ident()] = stage

    @property
    def stage(self) -> Phase:
        """Where the run is: the main thread's stage, or while it waits for a
        thread working beside it, that thread's (the alarm strikes the main
        thread, and must name what it was waiting for)."""
        if self._awaited is not None and self._awaited in self._stages:
            return self._stages[self._awaited]
        return self._stages.get(self._main, Phase.SMTP_CONNECT)

    @contextmanager
    def awaiting(self, thread: threading.Thread) -> Iterator[None]:
        self._awaited = thread.ident
        try:
            yield
        finally:
            self._awaited = None

    def remaining(self) -> float:
        return self.ends - self._clock()

    def step_ends(self, limit: float | None = None) -> float:
        """When a step starting now must be over (a monotonic time)."""
        now = self._clock()
        if self.expired:
            return min(now + GRACE, self.ends + GRACE)
        step = self.step_timeout if limit is None else min(limit, self.step_timeout)
        return max(min(now + step, self.ends - SOCKET_MARGIN), now + MIN_SOCKET_TIMEOUT)

    def socket_timeout(self, cap: float | None = None) -> float:
        """A step's socket timeout, for steps that do not track their end."""
        left = self.step_ends(cap) - self._clock()
        return max(left, MIN_SOCKET_TIMEOUT)

    def check(self) -> None:
        """Raise RunTimeout if the budget is spent (for loops that sleep)."""
        if self.remaining() <= 0:
            self.expired = True
            raise RunTimeout(self.stage, self.budget)

    # The alarm and SIGTERM: armed for the duration of the probe only.
    def __enter__(self) -> Deadline:
        def on_alarm(signum: int, frame: FrameType | None) -> None:
            self.expired = True
            raise RunTimeout(self.stage, self.budget)

        def on_term(signum: int, frame: FrameType | None) -> None:
            self.expired = True
            raise Interrupted(self.stage, signal.Signals(signum).name)

        self._previous = signal.signal(signal.SIGALRM, on_alarm)
        self._previous_term = signal.signal(signal.SIGTERM, on_term)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining(), 0.001))
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        signal.signal(signal.SIGTERM, self._previous_term)
