"""The nagiosplugin layer: facts from the probe become metrics, states, text.

Every perfdata label the plugin can print is in ``PERFDATA`` below, with what
it measures; the states come from these contexts:

- ``roundtrip`` (and ``smtp_total`` in submit mode): the -w/-c ranges;
- each phase label: its budget (``--phase-warning``/``--phase-critical``);
- ``failure``: a ProbeError from the protocol code, always CRITICAL;
- ``delivery``: the message did not arrive within --wait, CRITICAL;
- ``timeout``: the -t budget ran out, UNKNOWN, naming the stage.
"""

import time
from typing import Callable, Dict, Iterator, List, Optional

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from .deadline import Deadline
from .memory import Memory, PendingProbe, StateFile
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
    # the receiver's verdicts: 1 pass, 0 anything else (not evaluated included)
    "auth_spf": "the receiver's SPF verdict: 1 pass, 0 not pass",
    "auth_dkim": "the receiver's DKIM verdict: 1 pass, 0 not pass",
    "auth_dmarc": "the receiver's DMARC verdict: 1 pass, 0 not pass",
    "auth_arc": "the receiver's ARC verdict, when it evaluated ARC: 1 pass, 0 not pass",
    "dns_findings": "number of DNS findings (--dns-checks)",
    # memory across runs (roundtrip mode, unless --no-state)
    "late": "running total of probes that arrived after --wait, found by a later run",
    "lost": "running total of probes still missing after --lost-after",
    # poll mode
    "age": "poll mode: seconds since the newest matching message arrived (its INTERNALDATE)",
    "matches": "poll mode: matching messages received within --window",
}
SECONDS_LABELS = ("roundtrip", "smtp_connect", "smtp_starttls", "smtp_auth", "smtp_submit", "smtp_total", "imap_retrieval", "age")

# Budgets well-run pipelines meet; exceeding one is WARNING by default.
DEFAULT_PHASE_WARNING: Dict[str, str] = {
    "smtp_connect": "2",
    "smtp_starttls": "2",
    "smtp_auth": "1",
    "smtp_submit": "3",
    "imap_retrieval": "3",
}
PHASE_LABELS = tuple(label for label in SECONDS_LABELS if label not in ("roundtrip", "smtp_total", "age"))
# nagiosplugin state for each policy word; "ignore" reports without effect
_STATE = {"ok": Ok, "warning": Warn, "critical": Critical, "ignore": Ok}


def _seconds(value: float) -> float:
    # 3 decimals, and never a float that prints in exponent notation
    return round(value, 3)


class ProbeResource(nagiosplugin.Resource):
    """Runs the probe inside the -t budget and yields one metric per fact."""

    def __init__(self, run: Callable[..., ProbeOutcome], settings: Settings):
        self.run = run
        self.settings = settings
        self.outcome: Optional[ProbeOutcome] = None
        self.state = StateFile(settings.state_file) if settings.state_file else None
        self.memory: Optional[Memory] = None

    @property
    def name(self) -> str:
        return CHECK_NAME

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        pending = self.state.read().pending if self.state else []
        with Deadline(self.settings.timeout) as deadline:
            self.outcome = outcome = self.run(self.settings, deadline, pending)
        if self.state:
            self.memory = self.remember(outcome)
            yield nagiosplugin.Metric("late", self.memory.late, uom="c", min=0, context="late")
            yield nagiosplugin.Metric("lost", self.memory.lost, uom="c", min=0, context="lost")
            yield nagiosplugin.Metric("slow_streak", self.memory.slow_streak, context="slow_streak")
            if self.state.problems:
                yield nagiosplugin.Metric("state_file", self.state, context="state_file")
        yield from timing_metrics(outcome)
        if self.settings.config_warnings:
            yield nagiosplugin.Metric("configuration", self.settings.config_warnings, context="configuration")
        if outcome.error is not None:
            yield nagiosplugin.Metric("failure", outcome.error, context="failure")
        if outcome.timeout is not None:
            yield nagiosplugin.Metric("timeout", outcome.timeout, context="timeout")
        if outcome.not_delivered_within is not None:
            yield nagiosplugin.Metric("delivery", outcome.not_delivered_within, context="delivery")
        if outcome.junk_folder is not None:
            yield nagiosplugin.Metric("junk", outcome.junk_folder, context="junk")
        if outcome.bounce is not None:
            yield nagiosplugin.Metric("bounce", outcome.bounce, context="bounce")
        if outcome.auth is not None:
            yield from verdict_metrics(outcome.auth)
        if outcome.poll is not None:
            yield nagiosplugin.Metric("matches", outcome.poll.matches, min=0, context="matches")
            if outcome.poll.newest_age is None:
                yield nagiosplugin.Metric("no_match", outcome.poll, context="no_match")
            else:
                yield nagiosplugin.Metric("age", _seconds(outcome.poll.newest_age), uom="s", min=0, context="age")
        if outcome.dns is not None:
            for number, finding in enumerate(outcome.dns.findings, 1):
                yield nagiosplugin.Metric(f"dns_finding_{number}", finding, context="dns_finding")
            yield nagiosplugin.Metric("dns_findings", len(outcome.dns.findings), min=0, context="dns_findings")


    def remember(self, outcome: ProbeOutcome) -> Memory:
        """Merge this run into the state file: what resolved, what is pending, the streak."""
        new_pending = []
        if outcome.not_delivered_within is not None:
            # the probe's MAIL FROM time on the wall clock, for later runs
            sent_at = time.time() - (time.monotonic() - outcome.submission.submit_started)
            queue_id = outcome.receipt.queue_id if outcome.receipt else None
            new_pending.append(PendingProbe(outcome.marker, sent_at, queue_id))
        if outcome.roundtrip is not None:
            slow = not (self.settings.warning.match(outcome.roundtrip) and self.settings.critical.match(outcome.roundtrip))
        else:
            slow = True if (outcome.not_delivered_within is not None or outcome.error is not None) else None
        resolved = [probe.marker for probe, _ in outcome.late_arrivals] + [probe.marker for probe in outcome.lost]
        return self.state.merge(resolved, new_pending, len(outcome.late_arrivals), len(outcome.lost), slow)

def verdict_metrics(auth) -> Iterator[nagiosplugin.Metric]:
    from .verdicts import NOT_EVALUATED

    if not auth.header_found:
        yield nagiosplugin.Metric("auth_header", "missing", context="auth_header")
    elif auth.malformed:
        yield nagiosplugin.Metric("auth_header", "malformed", context="auth_header")
    for method, verdict in auth.verdicts.items():
        if method == "arc" and verdict.result == NOT_EVALUATED:
            continue  # most direct mail carries no ARC: no line, no metric
        yield nagiosplugin.Metric(f"auth_{method}", 1 if verdict.passed else 0, min=0, max=1, context="verdict")

def timing_metrics(outcome: ProbeOutcome) -> Iterator[nagiosplugin.Metric]:
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


class NoMatchContext(nagiosplugin.Context):
    """Poll mode: nothing matching within the window is CRITICAL."""

    def __init__(self, settings: Settings):
        super().__init__("no_match")
        self.settings = settings

    def evaluate(self, metric, resource):
        since = metric.value.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        return nagiosplugin.Result(Critical, f"no message matching {self.settings.poll.describe()} since {since}", metric)


class ConfigurationContext(nagiosplugin.Context):
    """Set-up that works but should not stay so (a world-readable password file)."""

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Warn, "; ".join(metric.value), metric)


class JunkContext(nagiosplugin.Context):
    """Delivered, but to the Junk folder: WARNING by default (--junk-state)."""

    def __init__(self, state: str):
        super().__init__("junk")
        self.state = _STATE[state]

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(self.state, f'delivered to Junk folder "{metric.value}" after '
                                   f"{resource.outcome.roundtrip:.3f} s", metric)


class BounceContext(nagiosplugin.Context):
    """A bounce of this run's message came back: CRITICAL with the remote reply."""

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Critical, f"bounced after {resource.outcome.bounced_after:.1f} s: "
                                   f"{metric.value.describe()}", metric)


class SlowStreakContext(nagiosplugin.Context):
    """--escalate-after N: a slow round trip after N-1 not-OK ones is CRITICAL."""

    def __init__(self, settings: Settings):
        super().__init__("slow_streak")
        self.settings = settings

    def evaluate(self, metric, resource):
        limit = self.settings.escalate_after
        roundtrip = resource.outcome.roundtrip
        if limit and metric.value >= limit and roundtrip is not None and self.settings.critical.match(roundtrip) \
                and not self.settings.warning.match(roundtrip):
            return nagiosplugin.Result(
                Critical, f"round trip not OK in {metric.value} consecutive runs (--escalate-after {limit}), "
                f"this one {roundtrip:.3f} s", metric)
        return nagiosplugin.Result(Ok, None, metric)


class StateFileContext(nagiosplugin.Context):
    """A state file that cannot be used is a WARNING; a corrupt one, started afresh, is only said."""

    def evaluate(self, metric, resource):
        state = metric.value
        return nagiosplugin.Result(Ok if state.usable else Warn, "; ".join(state.problems), metric)


class TimeoutContext(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Unknown, str(metric.value), metric)


class DeliveryContext(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        queue_id = resource.outcome.receipt.queue_id if resource.outcome.receipt else None
        where = f" (queued as {queue_id})" if queue_id else ""
        return nagiosplugin.Result(Critical, f"not delivered within {metric.value:g} s{where}", metric)


class VerdictContext(nagiosplugin.Context):
    """One method's verdict: its state comes from the policy, its text is the verdict line."""

    def __init__(self, policy):
        super().__init__("verdict")
        self.policy = policy

    def evaluate(self, metric, resource):
        verdict = resource.outcome.auth.verdicts[metric.name[len("auth_"):]]
        state = self.policy.state_for(verdict.method, verdict.result)
        return nagiosplugin.Result(_STATE[state], verdict.line(), metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, "", "", "", 0, 1)


class AuthHeaderContext(nagiosplugin.Context):
    """No Authentication-Results header from the receiver, or one that does not parse."""

    def __init__(self, policy):
        super().__init__("auth_header")
        self.policy = policy

    def evaluate(self, metric, resource):
        auth = resource.outcome.auth
        if metric.value == "missing":
            text = "no Authentication-Results header from the receiver"
        else:
            text = f"the receiver's Authentication-Results header does not parse: {auth.malformed}"
        return nagiosplugin.Result(_STATE[self.policy.state_for("header", metric.value)], text, metric)


class DnsFindingContext(nagiosplugin.Context):
    def __init__(self, state: str):
        super().__init__("dns_finding")
        self.state = _STATE[state]

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(self.state, str(metric.value), metric)


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
        if self.settings.mode is Mode.POLL:
            return (f"newest message matching {self.settings.poll.describe()} arrived {outcome.poll.newest_age:.0f} s ago "
                    f"({outcome.poll.matches} in the window){self._suffix()}")
        folder = outcome.found_in.mailbox.folder if outcome.found_in else self.settings.imap_folder
        return f"round trip {outcome.roundtrip:.3f} s ({folder}{queued}){self._suffix()}"

    def problem(self, results) -> str:
        return f"{results.first_significant}{self._suffix()}"

    def verbose(self, results) -> List[str]:
        """Below the status line: every verdict, every DNS finding, and the
        other problems when there is more than one."""
        outcome: Optional[ProbeOutcome] = results[0].resource.outcome if len(results) else None
        lines = []
        if outcome is not None and outcome.auth is not None:
            lines += [str(results[f"auth_{method}"]) for method in outcome.auth.verdicts if f"auth_{method}" in results]
        if outcome is not None and outcome.dns is not None:
            lines += [str(finding) for finding in outcome.dns.findings]
        if outcome is not None:
            lines += [f"{probe.describe()} arrived late, after {delay:.0f} s" for probe, delay in outcome.late_arrivals]
            lines += [f"{probe.describe()} lost: not arrived after {self.settings.lost_after:g} s" for probe in outcome.lost]
        if "state_file" in results and results["state_file"].state == Ok:
            lines.append(str(results["state_file"]))
        problems = [result for result in results if result.state != Ok]
        if len(problems) > 1:
            lines += [str(result) for result in problems
                      if result.metric is None or result.metric.context not in ("verdict", "dns_finding")]
        return lines


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
    headline = {Mode.ROUNDTRIP: "roundtrip", Mode.SUBMIT: "smtp_total", Mode.POLL: "age"}[settings.mode]
    contexts = [
        FailureContext("failure"),
        TimeoutContext("timeout"),
        DeliveryContext("delivery"),
    ]
    contexts += [
        VerdictContext(settings.auth_policy),
        AuthHeaderContext(settings.auth_policy),
        DnsFindingContext(settings.dns_finding_state),
        nagiosplugin.ScalarContext("dns_findings"),
        nagiosplugin.ScalarContext("matches"),
        NoMatchContext(settings),
    ]
    for label in SECONDS_LABELS:
        if label == headline:
            warning, critical = settings.warning, settings.critical
        else:
            warning, critical = settings.phase_thresholds.get(label, (None, None))
        contexts.append(nagiosplugin.ScalarContext(label, warning, critical, fmt_metric=_fmt_seconds))
    contexts += [
        nagiosplugin.ScalarContext("late"),
        nagiosplugin.ScalarContext("lost"),
        SlowStreakContext(settings),
        StateFileContext("state_file"),
        JunkContext(settings.junk_state),
        ConfigurationContext("configuration"),
        BounceContext("bounce"),
    ]
    check = ProbeCheck(ProbeResource(run, settings), *contexts, ProbeSummary(settings), verbose=settings.verbose)
    check.name = CHECK_NAME
    return check
