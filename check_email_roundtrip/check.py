"""The nagiosplugin layer: facts from the probe become metrics, states, text.

Every perfdata label the plugin can print is in ``PERFDATA`` below, with what
it measures; the states come from these contexts:

- ``roundtrip`` (and ``smtp_total`` in submit mode): the -w/-c ranges;
- each phase label: its budget (``--phase-warning``/``--phase-critical``);
- ``failure``: a ProbeError from the protocol code, always CRITICAL;
- ``delivery``: the message did not arrive within --wait, CRITICAL;
- ``timeout``: the -t budget ran out, UNKNOWN, naming the stage.
"""

from typing import Callable, Dict, Iterator, List, Optional, Tuple

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown

from .deadline import Deadline
from .probe import ProbeOutcome
from .settings import Mode, Settings

CHECK_NAME = "EMAIL_ROUNDTRIP"

# label -> what it measures (seconds, 3 decimals).  The README's table is
# checked against this one.
PERFDATA: Dict[str, str] = {
    "roundtrip": "from MAIL FROM until the message was found in the IMAP folder",
    "smtp_connect": "SMTP name resolution, TCP connect (+ TLS for implicit TLS), greeting, first EHLO",
    "smtp_starttls": "SMTP STARTTLS command, TLS handshake and the EHLO after it",
    "smtp_auth": "SMTP AUTH exchange",
    "smtp_submit": "SMTP MAIL FROM until the final reply to the message data",
    "smtp_total": "the whole SMTP session, connect to QUIT",
    "imap_retrieval": "one look into the mailbox: IMAP connect, TLS, LOGIN, EXAMINE, the search that found the message, header fetch",
}

# Budgets well-run pipelines meet; exceeding one is WARNING by default.
DEFAULT_PHASE_WARNING: Dict[str, str] = {
    "smtp_connect": "2",
    "smtp_starttls": "2",
    "smtp_auth": "1",
    "smtp_submit": "3",
    "imap_retrieval": "3",
}
PHASE_LABELS = tuple(label for label in PERFDATA if label not in ("roundtrip", "smtp_total"))


def _seconds(value: float) -> float:
    # 3 decimals, and never a float that prints in exponent notation
    return round(value, 3)


class ProbeResource(nagiosplugin.Resource):
    """Runs the probe inside the -t budget and yields one metric per fact."""

    def __init__(self, run: Callable[[Settings, Deadline], ProbeOutcome], settings: Settings):
        self.run = run
        self.settings = settings
        self.outcome: Optional[ProbeOutcome] = None

    @property
    def name(self) -> str:
        return CHECK_NAME

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with Deadline(self.settings.timeout) as deadline:
            self.outcome = outcome = self.run(self.settings, deadline)
        yield from timing_metrics(outcome, self.settings.mode)
        if outcome.error is not None:
            yield nagiosplugin.Metric("failure", outcome.error, context="failure")
        if outcome.timeout is not None:
            yield nagiosplugin.Metric("timeout", outcome.timeout, context="timeout")
        if outcome.not_delivered_within is not None:
            yield nagiosplugin.Metric("delivery", outcome.not_delivered_within, context="delivery")


def timing_metrics(outcome: ProbeOutcome, mode: Mode) -> Iterator[nagiosplugin.Metric]:
    submission = outcome.submission
    values = {
        "smtp_connect": submission.connect,
        "smtp_starttls": submission.starttls,
        "smtp_auth": submission.auth,
        "smtp_submit": submission.submit,
        "smtp_total": submission.total,
        "roundtrip": outcome.roundtrip,
        "imap_retrieval": outcome.retrieval.cycle if outcome.retrieval else None,
    }
    for label, value in values.items():
        if value is not None:
            yield nagiosplugin.Metric(label, _seconds(value), uom="s", min=0, context=label)


class FailureContext(nagiosplugin.Context):
    """A ProbeError: CRITICAL, its text is the whole explanation."""

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Critical, str(metric.value), metric)


class TimeoutContext(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Unknown, str(metric.value), metric)


class DeliveryContext(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        queue_id = resource.outcome.receipt.queue_id if resource.outcome.receipt else None
        where = f" (queued as {queue_id})" if queue_id else ""
        return nagiosplugin.Result(Critical, f"not delivered within {metric.value:g} s{where}", metric)


def _fmt_seconds(metric, context) -> str:
    return f"{metric.name} {metric.value:.3f} s"


class ProbeSummary(nagiosplugin.Summary):
    def __init__(self, settings: Settings):
        self.settings = settings

    def _suffix(self) -> str:
        return ", TLS NOT VERIFIED (--insecure)" if self.settings.insecure else ""

    def ok(self, results) -> str:
        resource = results[0].resource
        outcome: ProbeOutcome = resource.outcome
        queued = f", queued as {outcome.receipt.queue_id}" if outcome.receipt and outcome.receipt.queue_id else ""
        if self.settings.mode is Mode.SUBMIT:
            return f"submitted in {outcome.submission.total:.3f} s{queued}{self._suffix()}"
        return f"round trip {outcome.roundtrip:.3f} s ({self.settings.imap_folder}{queued}){self._suffix()}"

    def problem(self, results) -> str:
        return f"{results.first_significant}{self._suffix()}"

    def verbose(self, results) -> List[str]:
        lines = [str(result) for result in results if result.state != Ok]
        return lines if len(lines) > 1 else []  # a single problem is the first line already


class ProbeCheck(nagiosplugin.Check):
    """nagiosplugin's Check, with long output also at -v0.

    nagiosplugin prints the lines below the status line only from -v on; ours
    name every further problem, so they are printed at -v0 too (perfdata then
    moves to the last line).  With nothing to say below the status line, the
    perfdata stays on line 1.
    """

    def __init__(self, *objects, verbose: int):
        super().__init__(*objects)
        self.verbose_level = verbose

    def __call__(self):
        super().__call__()
        nagiosplugin.Runtime().output.verbose = max(self.verbose_level, 1 if self.verbose_str else 0)


def build_check(settings: Settings, run: Callable[[Settings, Deadline], ProbeOutcome]) -> nagiosplugin.Check:
    headline = "roundtrip" if settings.mode is Mode.ROUNDTRIP else "smtp_total"
    contexts = [
        FailureContext("failure"),
        TimeoutContext("timeout"),
        DeliveryContext("delivery"),
    ]
    for label in PERFDATA:
        if label == headline:
            warning, critical = settings.warning, settings.critical
        else:
            warning, critical = settings.phase_thresholds.get(label, (None, None))
        contexts.append(nagiosplugin.ScalarContext(label, warning, critical, fmt_metric=_fmt_seconds))
    check = ProbeCheck(ProbeResource(run, settings), *contexts, ProbeSummary(settings), verbose=settings.verbose)
    check.name = CHECK_NAME
    return check
