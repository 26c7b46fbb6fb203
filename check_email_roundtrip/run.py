"""One check, start to end: memory, the probe inside -t, evaluation.

The probe runs inside the run's :class:`~.deadline.Deadline` (the ``-t``
budget and its alarm); the state file is read before and merged after, never
held across the wait; the evaluation turns facts into a
:class:`~.render.Report` for a renderer to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from .check import evaluate
from .deadline import Deadline
from .facts import ProbeResult, RoundtripResult
from .memory import PendingProbe, Remembered, StateFile
from .probe import run_poll, run_roundtrip, run_submit
from .render import Report
from .settings import Mode, Settings

Probe = Callable[[Settings, Deadline, Sequence[PendingProbe]], ProbeResult]
PROBES: dict[Mode, Probe] = {Mode.ROUNDTRIP: run_roundtrip, Mode.SUBMIT: run_submit, Mode.POLL: run_poll}


def run_check(settings: Settings, started: float | None = None) -> Report:
    """``started``: when the process started (time.monotonic()); -t counts from there."""
    state = StateFile(settings.memory.state_file) if settings.memory.state_file else None
    pending = state.read().pending if state else []
    with Deadline(settings.timeout, started, settings.step_timeout) as deadline:
        result = PROBES[settings.mode](settings, deadline, pending)
    memory = remember(state, result, settings) if state else None
    return evaluate(settings, result, memory)


def remember(state: StateFile, result: ProbeResult, settings: Settings) -> Remembered:
    """Merge this run into the state file: what resolved, what is pending, the streak."""
    new_pending, resolved, late, lost = [], [], 0, 0
    slow: bool | None = None
    if isinstance(result, RoundtripResult):
        if result.not_delivered_within is not None and result.submission is not None:
            submission = result.submission
            new_pending.append(PendingProbe(result.marker, submission.mail_from_wall, submission.queue_id))
        thresholds = settings.thresholds
        if result.roundtrip is not None:
            slow = not (
                thresholds.warning.match(result.roundtrip) and thresholds.critical.match(result.roundtrip)
            )
        elif result.not_delivered_within is not None or result.error is not None:
            slow = True
        resolved = [late_probe.probe.marker for late_probe in result.late] + [
            probe.marker for probe in result.lost
        ]
        late, lost = len(result.late), len(result.lost)
    return state.merge(resolved, new_pending, late, lost, slow)
