"""One check, start to end: memory, the probe inside -t, evaluation.

The probe runs inside the run's :class:`~.deadline.Deadline` (the ``-t``
budget and its alarm); the state file is read before and merged after, never
held across the wait; the evaluation turns facts into a
:class:`~.render.Report` for a renderer to print, and, with
``--prometheus-textfile``, into a textfile for node_exporter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .check import evaluate
from .deadline import Deadline
from .facts import RoundtripResult
from .memory import Change, PendingProbe, Remembered, StateFile
from .probe import run_poll, run_roundtrip, run_submit
from .render import Report
from .settings import Mode, Settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Callable

    from .facts import ProbeResult

    Probe = Callable[[Settings, Deadline, Sequence[PendingProbe]], ProbeResult]

PROBES: dict[Mode, Probe] = {Mode.ROUNDTRIP: run_roundtrip, Mode.SUBMIT: run_submit, Mode.POLL: run_poll}


def run_check(settings: Settings, started: float | None = None) -> Report:
    """``started``: when the process started (time.monotonic()); -t counts from there."""
    started_at = time.time() - (time.monotonic() - started if started is not None else 0.0)
    state = StateFile(settings.memory.state_file) if settings.memory.state_file else None
    with Deadline(settings.timeout, started, settings.step_timeout) as deadline:
        pending = state.read(deadline).pending if state else []
        result = PROBES[settings.mode](settings, deadline, pending)
        # after -t or SIGTERM the merge still gets its grace: the probe sent
        # is remembered, so that a later run reports it late or lost
        memory = remember(state, result, settings, deadline) if state else None
    report = evaluate(settings, result, memory)._replace(started_at=started_at)
    if settings.outputs.prometheus_textfile:
        from .textfile import export

        report = export(report, settings, settings.outputs.prometheus_textfile)
    return report


def remember(state: StateFile, result: ProbeResult, settings: Settings, deadline: Deadline) -> Remembered:
    """Merge this run into the state file: what resolved, what is pending, the streak."""
    if not isinstance(result, RoundtripResult):
        return state.merge(deadline, Change())
    new_pending = []
    submission = result.submission
    # --no-wait: this run's probe is always for a later run to judge
    unseen = result.no_wait or (result.arrival is None and result.bounced is None)
    if submission is not None and unseen:
        # sent but not seen: not delivered within --wait, or the run stopped
        # (-t, SIGTERM, an IMAP failure) while waiting
        new_pending.append(PendingProbe(result.marker, submission.mail_from_wall, submission.queue_id))
    thresholds = settings.thresholds
    slow: bool | None = None
    if result.roundtrip is not None:
        slow = not (
            thresholds.warning.match(result.roundtrip) and thresholds.critical.match(result.roundtrip)
        )
    elif result.judged_age is not None:
        slow = not thresholds.warning.match(result.judged_age)
    elif result.not_delivered_within is not None or result.error is not None:
        slow = True
    settled = result.judged is not None and result.judged_age is None  # arrived or bounced
    change = Change(
        arrived=tuple(late.probe.marker for late in result.late),
        judged=(result.judged.marker,) if settled and result.judged else (),
        lost=tuple(probe.marker for probe in result.lost),
        new_pending=tuple(new_pending),
        slow=slow,
    )
    return state.merge(deadline, change)
