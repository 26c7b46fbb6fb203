"""The nagiosplugin layer: facts become metrics, metrics become states.

Every perfdata label the plugin can print is in ``PERFDATA`` below, with what
it measures.  States come from three kinds of contexts:

- thresholds (nagiosplugin's ScalarContext): the round trip (or the mode's
  headline figure) against -w/-c, each phase against its budget;
- facts whose state is a rule of the settings, not a threshold: one
  :class:`FactContext` each, made from the table in :func:`fact_contexts`
  (a ProbeError is CRITICAL, a timeout UNKNOWN, Junk is ``--junk-state``, a
  verdict is what ``--auth-policy`` says ...);
- the slow streak (``--escalate-after``), which needs the round trip too.

The first line comes from one summary per mode (``OK_LINES``).  What the
evaluation decided becomes a :class:`~.render.Report`, which a renderer
prints: this module prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime

import nagiosplugin
from nagiosplugin.state import Critical, Ok, ServiceState, Unknown, Warn

from .errors import LocalError
from .facts import Hop, PollResult, RoundtripResult, SmtpTimings, Submission, SubmitResult, WatchKind
from .memory import Remembered
from .record import Record
from .render import SERVICE, Finding, Report
from .settings import Level, Settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

    from .facts import ProbeResult
    from .tls import Handshake
    from .verdicts import AuthVerdicts

# label -> what it measures.  The README's table is checked against this one.
PERFDATA: dict[str, str] = {
    "roundtrip": "from MAIL FROM until the message was found in the IMAP folder",
    "smtp_connect": "SMTP name resolution, TCP connect (+ TLS for implicit TLS), greeting, first EHLO",
    "smtp_starttls": "SMTP STARTTLS command, TLS handshake and the EHLO after it",
    "smtp_auth": "SMTP AUTH exchange",
    "smtp_submit": "SMTP MAIL FROM until the final reply to the message data",
    "smtp_total": "the whole SMTP session, connect to QUIT",
    "oauth_token": "getting an OAuth2 access token (the token endpoint or command), when a request was made",
    "imap_retrieval": "one look into the mailbox: IMAP connect, TLS, LOGIN, EXAMINE, the search that found "
    "the message, header fetch",
    # the receiver's verdicts: 1 pass, 0 anything else (not evaluated included)
    "auth_spf": "the receiver's SPF verdict: 1 pass, 0 not pass",
    "auth_dkim": "the receiver's DKIM verdict: 1 pass, 0 not pass",
    "auth_dmarc": "the receiver's DMARC verdict: 1 pass, 0 not pass",
    "auth_arc": "the receiver's ARC verdict, when it evaluated ARC: 1 pass, 0 not pass",
    "dns_findings": "number of DNS findings (--dns-checks)",
    # the found message's Received chain (hops.py)
    "hop_max": "the longest delay before a hop the receiving side wrote, whole seconds, when it wrote one",
    "hops": "hops read from the found message's Received headers, trusted and claimed",
    # TLS health, every run that does TLS (also with --insecure)
    "smtp_cert_days": "days until the SMTP server's certificate expires (negative: expired); --cert-days",
    "imap_cert_days": "days until the IMAP server's certificate expires (negative: expired); --cert-days",
    # memory across runs (roundtrip mode, unless --no-state)
    "late": "running total of probes that arrived after --wait, found by a later run",
    "pending": "--no-wait: probes sent and not judged yet, this run's included",
    "lost": "running total of probes still missing after --lost-after",
    # poll mode
    "age": "poll mode: seconds since the newest matching message arrived (its INTERNALDATE)",
    "matches": "poll mode: matching messages received within --window",
}
SECONDS_LABELS = (
    "roundtrip",
    "smtp_connect",
    "smtp_starttls",
    "smtp_auth",
    "smtp_submit",
    "smtp_total",
    "imap_retrieval",
    "oauth_token",
    "age",
)
# The figure -w/-c apply to, per result type.
HEADLINE = {RoundtripResult: "roundtrip", SubmitResult: "smtp_total", PollResult: "age"}

# Budgets well-run pipelines meet; exceeding one is WARNING by default.
DEFAULT_PHASE_WARNING: dict[str, str] = {
    "smtp_connect": "2",
    "smtp_starttls": "2",
    "smtp_auth": "1",
    "smtp_submit": "3",
    "imap_retrieval": "3",
}
PHASE_LABELS = tuple(label for label in SECONDS_LABELS if label not in ("roundtrip", "smtp_total", "age"))
LEVEL_STATE = {Level.OK: Ok, Level.WARNING: Warn, Level.CRITICAL: Critical}
# nagiosplugin state for each --auth-policy word; "ignore" reports without effect
POLICY_STATE = {"ok": Ok, "warning": Warn, "critical": Critical, "ignore": Ok}


def seconds(value: float) -> float:
    """3 decimals, and never a float that prints in exponent notation."""
    return round(value, 3)


# -- facts -> metrics -------------------------------------------------------------------
def metrics(
    result: ProbeResult, settings: Settings, memory: Remembered | None
) -> Iterator[nagiosplugin.Metric]:
    Metric = nagiosplugin.Metric
    if memory is not None:
        if isinstance(result, RoundtripResult) and result.no_wait:
            yield Metric("pending", memory.pending, min=0, context="pending")
        yield Metric("late", memory.late, uom="c", min=0, context="late")
        yield Metric("lost", memory.lost, uom="c", min=0, context="lost")
        yield Metric("slow_streak", memory.slow_streak, context="slow_streak")
        if memory.problems:
            yield Metric("state_file", memory, context="state_file")
    yield from timing_metrics(result)
    yield from tls_metrics(result, settings)
    if settings.config_warnings:
        yield Metric("configuration", settings.config_warnings, context="configuration")
    if result.error is not None:
        yield Metric("failure", result.error, context="failure")
    if result.stopped is not None:
        yield Metric("stopped", result.stopped, context="stopped")
    if isinstance(result, RoundtripResult):
        yield from _roundtrip_metrics(result)
    if isinstance(result, PollResult) and result.matches is not None:
        yield Metric("matches", result.matches, min=0, context="matches")
        if result.newest_age is None:
            yield Metric("no_match", result, context="no_match")
        else:
            yield Metric("age", seconds(result.newest_age), uom="s", min=0, context="age")


def _roundtrip_metrics(result: RoundtripResult) -> Iterator[nagiosplugin.Metric]:
    from .policy import NOT_EVALUATED

    Metric = nagiosplugin.Metric
    if result.not_delivered_within is not None:
        yield Metric("delivery", result, context="delivery")
    if result.judged_age is not None:
        yield Metric("undelivered", result, context="undelivered")
    if result.arrival is not None and result.arrival.kind is WatchKind.JUNK:
        yield Metric("junk", result.arrival, context="junk")
    if result.bounced is not None:
        yield Metric("bounce", result.bounced, context="bounce")
    if result.arrival is not None:
        hops = result.arrival.hops
        yield Metric("hops", len(hops), min=0, context="hops")
        trusted = [hop.seconds for hop in hops if hop.trusted]
        if trusted:
            yield Metric("hop_max", seconds(max(trusted)), uom="s", min=0, context="hop_max")
    verdicts = result.verdicts
    if verdicts is not None:
        if header_problem(verdicts) is not None:
            yield Metric("auth_header", verdicts, context="auth_header")
        for method, verdict in verdicts.verdicts.items():
            if method == "arc" and verdict.result == NOT_EVALUATED:
                continue  # most direct mail carries no ARC: no line, no metric
            yield Metric(f"auth_{method}", verdict, context="verdict")
    if result.dns is not None:
        for number, finding in enumerate(result.dns.findings, 1):
            yield Metric(f"dns_finding_{number}", finding, context="dns_finding")
        yield Metric("dns_findings", len(result.dns.findings), min=0, context="dns_findings")


def timing_metrics(result: ProbeResult) -> Iterator[nagiosplugin.Metric]:
    smtp = getattr(result, "smtp", SmtpTimings())
    imap = getattr(result, "imap", None)
    values = {
        "smtp_connect": smtp.connect,
        "smtp_starttls": smtp.starttls,
        "smtp_auth": smtp.auth,
        "smtp_submit": smtp.submit,
        "smtp_total": smtp.total,
        "roundtrip": result.roundtrip if isinstance(result, RoundtripResult) else None,
        "imap_retrieval": imap.cycle if imap is not None else None,
        "oauth_token": result.oauth_token,
    }
    for label, value in values.items():
        if value is not None:
            yield nagiosplugin.Metric(label, seconds(value), uom="s", min=0, context=label)


class ServerCertificate(Record):
    """A mail server's certificate as the run found it."""

    protocol: str  # SMTP, IMAP
    names: str  # its SAN names (or CN), in words
    not_after: datetime
    days: float  # left; negative once expired
    judged: bool  # False when the handshake failed already (that failure says why)


# the oldest version of each --tls-min, as Python names them
TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def server_handshakes(result: ProbeResult, settings: Settings) -> Iterator[tuple[str, Handshake]]:
    """("smtp" or "imap", the last handshake with that server of the settings)."""
    for prefix, endpoint in (("smtp", settings.smtp), ("imap", settings.imap)):
        if endpoint is None:
            continue
        seen = [
            handshake
            for handshake in result.tls
            if handshake.protocol == prefix.upper() and (handshake.host, handshake.port) == endpoint[:2]
        ]
        if seen:
            yield prefix, seen[-1]


def tls_metrics(result: ProbeResult, settings: Settings) -> Iterator[nagiosplugin.Metric]:
    """Certificate days left of both servers, and a TLS version below --tls-min."""
    minimum = TLS_VERSIONS.index(f"TLSv{settings.tls.minimum}")
    for prefix, handshake in server_handshakes(result, settings):
        facts = handshake.certificate_facts()
        if facts is not None:
            certificate = ServerCertificate(
                handshake.protocol, facts.names(), facts.not_after, facts.days_left(), bool(handshake.version)
            )
            yield nagiosplugin.Metric(f"{prefix}_cert_days", certificate, context="cert_days")
        if handshake.version in TLS_VERSIONS and TLS_VERSIONS.index(handshake.version) < minimum:
            yield nagiosplugin.Metric(f"{prefix}_tls_version", handshake, context="tls_version")


def _cert_state(settings: Settings, certificate: ServerCertificate) -> ServiceState:
    days = settings.thresholds.cert_days
    if days is None or not certificate.judged:
        return Ok
    if certificate.days < days.critical or certificate.days < 0:
        return Critical
    return Warn if certificate.days < days.warning else Ok


def _cert_text(certificate: ServerCertificate) -> str:
    subject = f"{certificate.protocol} certificate for {certificate.names}"
    if certificate.days < 0:
        return f"{subject} expired on {certificate.not_after:%Y-%m-%d %H:%M UTC}"
    days = certificate.days
    left = f"{round(days)} days" if days >= 1.5 else "1 day" if days >= 1 else f"{days * 24:.0f} hours"
    return f"{subject} expires in {left} ({certificate.not_after:%Y-%m-%d})"


def _cert_performance(settings: Settings) -> Callable[[nagiosplugin.Metric], nagiosplugin.Performance]:
    days = settings.thresholds.cert_days
    warning, critical = (f"{days.warning:g}:", f"{days.critical:g}:") if days else ("", "")
    return lambda m: nagiosplugin.Performance(m.name, round(m.value.days, 2), "", warning, critical)


def _tls_version_text(settings: Settings) -> Callable[[Handshake], str]:
    minimum = settings.tls.minimum
    return lambda h: (
        f"{h.protocol} server {h.host}:{h.port} negotiated {h.version} (below --tls-min {minimum})"
    )


# -- metrics -> states ------------------------------------------------------------------
class FactContext(nagiosplugin.Context):
    """A fact whose state is a rule, not a threshold; its text says why."""

    def __init__(
        self,
        name: str,
        state: Callable[[Any], ServiceState],
        text: Callable[[Any], str] = str,
        performance: Callable[[nagiosplugin.Metric], nagiosplugin.Performance] | None = None,
    ):
        super().__init__(name)
        self.state, self.text, self._performance = state, text, performance

    def evaluate(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Result:
        return nagiosplugin.Result(self.state(metric.value), self.text(metric.value), metric)

    def performance(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Performance | None:
        return self._performance(metric) if self._performance else None


def _always(state: ServiceState) -> Callable[[Any], ServiceState]:
    return lambda _value: state


def _queued(result: RoundtripResult) -> str:
    queue_id = result.submission.queue_id if result.submission else None
    return f" (queued as {queue_id})" if queue_id else ""


def header_problem(verdicts: AuthVerdicts) -> str | None:
    """What is wrong with the receiver's header itself, as --auth-policy names it."""
    if not verdicts.header_found:
        return "missing"
    return "malformed" if verdicts.malformed else None


def _header_text(verdicts: AuthVerdicts) -> str:
    if not verdicts.header_found:
        return "no Authentication-Results header from the receiver"
    return f"the receiver's Authentication-Results header does not parse: {verdicts.malformed}"


def fact_contexts(settings: Settings) -> list[nagiosplugin.Context]:
    """One context per kind of fact: its state, and the words for it."""
    policy = settings.verdicts.policy
    poll = settings.poll
    return [
        # a fact about the service is CRITICAL; a failure on our side (a token
        # command, a token file) is UNKNOWN
        FactContext("failure", lambda e: Unknown if isinstance(e, LocalError) else Critical),
        FactContext("stopped", _always(Unknown)),
        FactContext(
            "delivery",
            _always(Critical),
            lambda r: f"not delivered within {r.not_delivered_within:g} s{_queued(r)}",
        ),
        FactContext(
            "bounce", _always(Critical), lambda b: f"bounced after {b.after:.1f} s: {b.bounce.describe()}"
        ),
        # --no-wait: the earlier probe still missing, its age against -w/-c
        FactContext("undelivered", lambda r: _age_state(settings, r.judged_age), _undelivered_text),
        FactContext(
            "junk",
            _always(LEVEL_STATE[settings.elsewhere.junk_state]),
            lambda a: f'delivered to Junk folder "{a.folder}" after {a.roundtrip:.3f} s',
        ),
        FactContext("configuration", _always(Warn), "; ".join),
        FactContext("state_file", lambda m: Ok if m.usable else Warn, lambda m: "; ".join(m.problems)),
        FactContext(
            "no_match",
            _always(Critical),
            lambda r: (
                f"no message matching {poll.describe() if poll else ''} "
                f"since {r.since.strftime('%Y-%m-%d %H:%M:%S UTC')}"
            ),
        ),
        FactContext("dns_finding", _always(LEVEL_STATE[settings.verdicts.dns_finding_state])),
        FactContext(
            "verdict",
            lambda v: POLICY_STATE[policy.state_for(v.method, v.result)],
            lambda v: v.line(),
            lambda m: nagiosplugin.Performance(m.name, 1 if m.value.passed else 0, "", "", "", 0, 1),
        ),
        FactContext("cert_days", lambda c: _cert_state(settings, c), _cert_text, _cert_performance(settings)),
        FactContext("tls_version", _always(Warn), _tls_version_text(settings)),
        FactContext(
            "auth_header",
            lambda v: POLICY_STATE[policy.state_for("header", header_problem(v) or "")],
            _header_text,
        ),
    ]


class SlowStreakContext(nagiosplugin.Context):
    """--escalate-after N: a slow round trip after N-1 not-OK ones is CRITICAL."""

    def __init__(self, settings: Settings, roundtrip: float | None):
        super().__init__("slow_streak")
        self.settings, self.roundtrip = settings, roundtrip

    def evaluate(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Result:
        limit = self.settings.memory.escalate_after
        roundtrip, thresholds = self.roundtrip, self.settings.thresholds
        if (
            limit
            and metric.value >= limit
            and roundtrip is not None
            and thresholds.critical.match(roundtrip)
            and not thresholds.warning.match(roundtrip)
        ):
            return nagiosplugin.Result(
                Critical,
                f"round trip not OK in {metric.value} consecutive runs (--escalate-after {limit}), "
                f"this one {roundtrip:.3f} s",
                metric,
            )
        return nagiosplugin.Result(Ok, None, metric)


def _fmt_seconds(metric: nagiosplugin.Metric, context: Any) -> str:
    return f"{metric.name} {metric.value:.3f} s"


def threshold_contexts(settings: Settings, headline: str) -> list[nagiosplugin.Context]:
    contexts = []
    for label in SECONDS_LABELS:
        if label == headline:
            warning, critical = settings.thresholds.warning, settings.thresholds.critical
        else:
            warning, critical = settings.thresholds.phases.get(label, (None, None))
        contexts.append(nagiosplugin.ScalarContext(label, warning, critical, fmt_metric=_fmt_seconds))
    return contexts + [
        nagiosplugin.ScalarContext(name)
        for name in ("dns_findings", "matches", "late", "lost", "pending", "hops", "hop_max")
    ]


# -- the first line and the lines below it ----------------------------------------------------
def _queue_id(submission: Submission | None) -> str:
    return f", queued as {submission.queue_id}" if submission and submission.queue_id else ""


def _submit_ok(result: SubmitResult, settings: Settings) -> str:
    return f"submitted in {result.smtp.total or 0:.3f} s{_queue_id(result.submission)}"


def _roundtrip_ok(result: RoundtripResult, settings: Settings) -> str:
    folder = result.arrival.folder if result.arrival else settings.imap_folder
    if not result.no_wait:
        return f"round trip {result.roundtrip or 0:.3f} s ({folder}{_queue_id(result.submission)})"
    submission = result.submission
    this_run = "this run's probe " + (
        f"queued as {submission.queue_id}" if submission and submission.queue_id else "sent"
    )
    if result.judged is None:
        return f"first run: nothing earlier to judge; {this_run}"
    when = time.strftime("%H:%M:%S", time.localtime(result.judged.sent_at))
    if result.judged_age is not None:
        return f"the probe of {when} on its way for {result.judged_age:.0f} s; {this_run}"
    return (
        f"round trip {result.roundtrip or 0:.0f} s of the probe of {when} ({folder}, by the server's "
        f"delivery time); {this_run}"
    )


def _age_state(settings: Settings, age: float | None) -> ServiceState:
    thresholds = settings.thresholds
    if age is None:
        return Ok
    if not thresholds.critical.match(age):
        return Critical
    return Warn if not thresholds.warning.match(age) else Ok


def _undelivered_text(result: RoundtripResult) -> str:
    judged = result.judged.describe() if result.judged else "the earlier probe"
    return f"not delivered after {result.judged_age or 0:.0f} s ({judged})"


def _poll_ok(result: PollResult, settings: Settings) -> str:
    criteria = settings.poll.describe() if settings.poll else "(nothing)"
    return (
        f"newest message matching {criteria} arrived {result.newest_age or 0:.0f} s ago "
        f"({result.matches} in the window)"
    )


def _hop_name(hop: Hop) -> str:
    return (hop.by or "(no by)") + (f" ({hop.protocol})" if hop.protocol else "")


def slowest_hop(hops: Sequence[Hop]) -> str | None:
    """The slowest trusted hop in words (the slowest claimed one when no hop
    is trusted); None when no hop took a second."""
    candidates = [hop for hop in hops if hop.trusted] or list(hops)
    if not candidates:
        return None
    hop = max(candidates, key=lambda candidate: candidate.seconds)
    if hop.seconds < 1:
        return None
    claimed = "" if hop.trusted else ", the sender side's claim"
    return f"{hop.seconds:.0f} s before {_hop_name(hop)}{claimed}"


def hop_table(hops: Sequence[Hop], whose: str) -> list[str]:
    """-v: one line per hop, oldest first."""
    if not hops:
        return []
    width = max(len(_hop_name(hop)) for hop in hops)
    lines = [f"hops of {whose}, oldest first (seconds since the stamp before, the first since MAIL FROM):"]
    for hop in hops:
        skew = "  clock skew: stamped before the previous hop, counted 0 s" if hop.skewed else ""
        trust = "trusted" if hop.trusted else "claimed"
        lines.append(f"{hop.seconds:6.0f} s  before {_hop_name(hop):<{width}}  {trust}{skew}")
    return lines


# The OK line of each mode; a problem's line is the problem itself.
OK_LINES: dict[type, Callable[[Any, Settings], str]] = {
    SubmitResult: _submit_ok,
    RoundtripResult: _roundtrip_ok,
    PollResult: _poll_ok,
}


class ProbeSummary(nagiosplugin.Summary):
    def __init__(self, settings: Settings, result: ProbeResult):
        self.settings, self.result = settings, result

    def _suffix(self) -> str:
        return ", TLS NOT VERIFIED (--insecure)" if self.settings.tls.insecure else ""

    def ok(self, results: nagiosplugin.Results) -> str:
        return OK_LINES[type(self.result)](self.result, self.settings) + self._suffix()

    def problem(self, results: nagiosplugin.Results) -> str:
        return f"{results.first_significant}{self._slowest_hop(results)}{self._suffix()}"

    def _slowest_hop(self, results: nagiosplugin.Results) -> str:
        """Where a round trip outside -w/-c lost its time."""
        result = self.result
        if not isinstance(result, RoundtripResult) or result.arrival is None:
            return ""
        if "roundtrip" not in results or results["roundtrip"].state == Ok:
            return ""
        slowest = slowest_hop(result.arrival.hops)
        return f", slowest hop: {slowest}" if slowest else ""

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        """Below the status line: every verdict, every DNS finding, late and
        lost probes, and the other problems when there is more than one."""
        result, lines = self.result, []
        if isinstance(result, RoundtripResult):
            if result.verdicts is not None:
                lines += [
                    str(results[f"auth_{m}"]) for m in result.verdicts.verdicts if f"auth_{m}" in results
                ]
            if result.dns is not None:
                lines += [str(finding) for finding in result.dns.findings]
            verbose = self.settings.verbose > 0
            if verbose and result.arrival is not None:
                whose = "the judged probe" if result.no_wait else "the probe"
                lines += hop_table(result.arrival.hops, whose)
            for late in result.late:
                lines.append(f"{late.probe.describe()} arrived late, after {late.delay:.0f} s")
                if verbose:
                    lines += hop_table(late.hops, f"the {late.probe.describe()}")
            lines += [
                f"{probe.describe()} lost: not arrived after {self.settings.memory.lost_after:g} s"
                for probe in result.lost
            ]
        if "state_file" in results and results["state_file"].state == Ok:
            lines.append(str(results["state_file"]))
        problems = [r for r in results if r.state != Ok]
        if len(problems) > 1:
            lines += [
                str(r)
                for r in problems
                if r.metric is None or r.metric.context not in ("verdict", "dns_finding")
            ]
        return lines


class _Facts(nagiosplugin.Resource):
    """The metrics of a run that has already happened."""

    def __init__(self, found: list[nagiosplugin.Metric]):
        self.found = found

    @property
    def name(self) -> str:
        return SERVICE

    def probe(self) -> list[nagiosplugin.Metric]:
        return self.found


def build_check(
    settings: Settings, result: ProbeResult, memory: Remembered | None = None
) -> nagiosplugin.Check:
    """The nagiosplugin Check for a finished run; call it to evaluate."""
    headline = HEADLINE[type(result)]
    contexts = [
        *fact_contexts(settings),
        *threshold_contexts(settings, headline),
        SlowStreakContext(settings, result.roundtrip if isinstance(result, RoundtripResult) else None),
    ]
    check = nagiosplugin.Check(
        _Facts(list(metrics(result, settings, memory))), *contexts, ProbeSummary(settings, result)
    )
    check.name = SERVICE
    return check


def evaluate(settings: Settings, result: ProbeResult, memory: Remembered | None = None) -> Report:
    check = build_check(settings, result, memory)
    check()
    details = check.verbose_str
    judged = [r for r in check.results.results if r.metric is not None]
    performance = (r.metric.performance() for r in judged)
    return Report(
        state=check.state,
        summary=check.summary_str,
        details=tuple(details) if isinstance(details, list) else ((details,) if details else ()),
        perfdata=tuple(sorted((p for p in performance if p is not None), key=str)),
        result=result,
        memory=memory,
        findings=tuple(
            Finding(r.metric.name, r.metric.context, r.state, str(r), r.metric.value) for r in judged
        ),
        mode=str(settings.mode),
    )
