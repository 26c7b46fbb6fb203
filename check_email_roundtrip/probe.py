"""One probe run, end to end, as facts: what happened and how long it took.

Knows nothing of Nagios.  ``run_submit`` and ``run_roundtrip`` never raise for
a failing server: they return a :class:`ProbeOutcome` whose ``error`` is the
ProbeError (and whose timings hold the phases that did complete), or whose
``timeout`` says the ``-t`` budget ran out and in which stage.
"""

import logging
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import __version__
from .deadline import Deadline
from .errors import Phase, ProbeError, RunTimeout
from .marker import MARKER_PATTERN, MARKER_PREFIX, new_marker
from .memory import PendingProbe
from .settings import Settings
from .smtp import SubmissionReceipt, SubmissionTimings, submit_message

if TYPE_CHECKING:  # imported where used, so runs that never need them never load them
    from .dnscheck import DnsReport
    from .dsn import Bounce
    from .imap import Mailbox, RetrievalTimings
    from .verdicts import AuthVerdicts

log = logging.getLogger("check_email_roundtrip")
TRACE = 5  # log level of the protocol trace (-vvv)
logging.addLevelName(TRACE, "TRACE")

# Arrival polling: the first search right after the server accepted the
# message, then one every 10 ms for the first 2 s (where loopback and LAN
# deliveries land, so the round trip is known to within ~10 ms), then waits
# growing by half each time up to 1 s: after that the server sees at most one
# bounded UID SEARCH a second per watched folder.  Each search only looks at
# UIDs newer than the probe, so the fast phase costs the server ~0.3 ms a
# search whatever the folder's size.  IMAP IDLE is not used: Dovecot 2.3
# tells an IDLE client about new mail 500 ms late, polling sees it sooner.
POLL_FAST_INTERVAL = 0.01
POLL_FAST_PHASE = 2.0  # seconds after the submission
POLL_GROWTH = 1.5
POLL_MAX_INTERVAL = 1.0


def poll_intervals() -> Iterator[float]:
    for _ in range(int(POLL_FAST_PHASE / POLL_FAST_INTERVAL)):
        yield POLL_FAST_INTERVAL
    interval = POLL_FAST_INTERVAL
    while True:
        interval = min(interval * POLL_GROWTH, POLL_MAX_INTERVAL)
        yield interval


@dataclass
class PollFindings:
    since: datetime  # start of the window (UTC)
    matches: int  # messages matching in the window
    newest_age: Optional[float] = None  # seconds since the newest match arrived (INTERNALDATE)


@dataclass
class ProbeOutcome:
    marker: Optional[str] = None
    submission: SubmissionTimings = field(default_factory=SubmissionTimings)
    receipt: Optional[SubmissionReceipt] = None
    retrieval: Optional["RetrievalTimings"] = None
    roundtrip: Optional[float] = None
    found_uid: Optional[int] = None
    header: Optional[bytes] = None  # the found message's header block
    not_delivered_within: Optional[float] = None  # set when --wait ran out
    auth: Optional["AuthVerdicts"] = None  # the receiver's verdicts, once found
    dns: Optional["DnsReport"] = None  # with --dns-checks
    poll: Optional[PollFindings] = None  # poll mode
    # earlier runs' undelivered probes: arrived since (with their delay in
    # seconds), or now counted lost
    found_in: Optional["Watch"] = None  # the folder the probe was found in
    junk_folder: Optional[str] = None  # set when that was the Junk folder
    bounce: Optional["Bounce"] = None  # a DSN for this run's message came back
    bounced_after: Optional[float] = None
    cleaned_up: Optional[bool] = None  # --cleanup: this run's message is gone
    purged: Dict[str, int] = field(default_factory=dict)  # --purge-older-than: folder -> count
    late_arrivals: List[Tuple["PendingProbe", float]] = field(default_factory=list)
    lost: List["PendingProbe"] = field(default_factory=list)
    error: Optional[ProbeError] = None
    timeout: Optional[RunTimeout] = None


def build_message(settings: Settings, marker: str) -> bytes:
    """The probe message, with CRLF line ends as SMTP requires (bare LF is
    refused by servers hardened against SMTP smuggling).  Built when DATA is
    sent: a run that fails before never loads the email package."""
    import email.policy
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    message = EmailMessage()
    message["From"] = settings.envelope_from
    message["To"] = settings.recipient
    message["Subject"] = f"check_email_roundtrip probe {marker}"
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    domain = settings.envelope_from.rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(idstring=marker, domain=domain)
    message["X-Check-Email-Roundtrip"] = marker
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to probes
    message.set_content(
        "This message was sent by check_email_roundtrip "
        f"{__version__} to prove that mail is delivered.\n"
        f"Marker: {marker}\n"
        f"Sent by: {socket.gethostname()}\n"
        "It can be deleted.\n"
    )
    ascii_only = settings.envelope_from.isascii() and settings.recipient.isascii()
    return message.as_bytes(policy=email.policy.SMTP if ascii_only else email.policy.SMTPUTF8)


def _trace(line: str) -> None:
    log.log(TRACE, "%s", line)


def _submit(settings: Settings, deadline: Deadline, outcome: ProbeOutcome, message: Callable[[], bytes]) -> None:
    log.info("SMTP %s as %s, from %s to %s", settings.smtp, settings.smtp.user or "(no AUTH)",
             settings.envelope_from, settings.recipient)
    outcome.receipt = submit_message(
        settings.smtp, settings.tls_context, settings.helo_name, settings.envelope_from, [settings.recipient],
        message, deadline, outcome.submission, trace=_trace if settings.verbose >= 3 else None,
    )
    log.info("SMTP accepted: %s", outcome.receipt.final_reply)
    mail_from_at = time.time() - (time.monotonic() - outcome.submission.submit_started)
    log.debug("MAIL FROM sent at %s", datetime.fromtimestamp(mail_from_at, timezone.utc).isoformat(timespec="microseconds"))
    timings = outcome.submission
    log.info("SMTP phases: %s", ", ".join(
        f"{name} {value:.3f} s" for name, value in (
            ("connect", timings.connect), ("starttls", timings.starttls), ("auth", timings.auth),
            ("submit", timings.submit), ("total", timings.total)) if value is not None))


def run_submit(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> ProbeOutcome:
    outcome = ProbeOutcome(marker=new_marker())
    try:
        _submit(settings, deadline, outcome, lambda: build_message(settings, outcome.marker))
    except ProbeError as exc:
        outcome.error = exc
    except RunTimeout as exc:
        outcome.timeout = exc
    return outcome


@dataclass
class Watch:
    """One folder searched while waiting: the target, Junk, or the bounce folder."""

    mailbox: "Mailbox"
    kind: str  # "target", "junk" or "bounce"
    since_uid: int
    classified: set = field(default_factory=set)  # UIDs already looked at


def classify(header: bytes, marker: str) -> str:
    """"probe" for this run's message, "bounce" for a DSN quoting it, else "other"."""
    import email.parser
    import email.policy

    message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)
    if str(message.get("X-Check-Email-Roundtrip", "")).strip() == marker or marker in str(message.get("Subject", "")):
        return "probe"
    if str(message.get("Content-Type", "")).lower().startswith("multipart/report"):
        return "bounce"
    return "other"  # a forward or a reply quoting the marker: not ours to judge


def wait_for_arrival(watches: List[Watch], outcome: ProbeOutcome, wait: float, deadline: Deadline) -> None:
    """Search every watched folder until the probe or a bounce is seen, or
    ``wait`` seconds after MAIL FROM.

    Sets ``found_uid``/``found_in``/``roundtrip`` (taken when the search
    answered, not after a sleep), or ``bounce``, or ``not_delivered_within``.
    """
    submitted_at = outcome.submission.submit_started
    wait_ends = submitted_at + wait
    intervals = poll_intervals()
    while True:
        for watch in watches:
            uids = [uid for uid in watch.mailbox.find_marker(outcome.marker, watch.since_uid) if uid not in watch.classified]
            seen_at = time.monotonic()
            for uid in uids:
                watch.classified.add(uid)
                header = watch.mailbox.fetch_header(uid)
                kind = classify(header, outcome.marker)
                if kind == "probe" and watch.kind != "bounce":
                    outcome.found_uid, outcome.found_in, outcome.header = uid, watch, header
                    outcome.roundtrip = seen_at - submitted_at
                    return
                if kind == "bounce":
                    from .dsn import parse_dsn

                    bounce = parse_dsn(watch.mailbox.fetch_message(uid))
                    if bounce is not None and bounce.failed:
                        outcome.bounce, outcome.bounced_after = bounce, seen_at - submitted_at
                        return
                    if bounce is not None:
                        log.info("delivery status notification: %s %s, still waiting", bounce.action, bounce.describe())
        now = time.monotonic()
        if now >= wait_ends:
            outcome.not_delivered_within = wait
            return
        deadline.enter(Phase.DELIVERY)
        time.sleep(min(next(intervals), wait_ends - now, max(deadline.remaining(), 0)))
        deadline.check()


def purge_old_probes(mailbox: "Mailbox", days: float) -> int:
    """Delete probe messages older than ``days`` in one folder: found by the
    marker prefix on the server, each Subject checked for a whole marker, so
    nothing without one is ever touched."""
    before = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%d-%b-%Y")
    uids = mailbox.search("BEFORE", before, "SUBJECT", MARKER_PREFIX)
    subjects = mailbox.fetch_subjects(uids)
    doomed = [uid for uid, subject in subjects.items() if MARKER_PATTERN.search(subject)]
    mailbox.delete(doomed)
    return len(doomed)


def _read_receiver_side(settings: Settings, deadline: Deadline, outcome: ProbeOutcome) -> None:
    """The verdicts in the found message's header, and the DNS behind them."""
    from .verdicts import read_verdicts

    outcome.auth = read_verdicts(outcome.header, settings.authserv_id)
    for text in outcome.auth.ignored:
        log.info("ignored Authentication-Results %s", text)
    if settings.dns_checks:
        from .dnscheck import check_dns

        outcome.dns = check_dns(outcome.header, settings.envelope_from, outcome.auth.sender_ip,
                                settings.nameserver, deadline)
        for note in outcome.dns.notes:
            log.info("%s", note)
        if outcome.dns.dmarc_policy:
            outcome.auth.with_dmarc_policy(outcome.dns.dmarc_policy)


def look_for_pending(mailbox: "Mailbox", outcome: ProbeOutcome, pending: Sequence[PendingProbe], lost_after: float) -> None:
    """Earlier probes that were not delivered in time: arrived since, or lost?"""
    if not pending:
        return
    since = datetime.fromtimestamp(min(probe.sent_at for probe in pending), timezone.utc)
    keys = ["SUBJECT", pending[0].marker]
    for probe in pending[1:]:
        keys = ["OR"] + keys + ["SUBJECT", probe.marker]
    uids = mailbox.search("SINCE", since.strftime("%d-%b-%Y"), *keys)
    subjects = mailbox.fetch_subjects(uids)
    arrived = mailbox.fetch_internaldates(uids)
    now = time.time()
    for probe in pending:
        hits = [uid for uid, subject in subjects.items() if probe.marker in subject]
        if hits:
            delay = max(arrived[hits[0]].timestamp() - probe.sent_at, 0.0) if hits[0] in arrived else now - probe.sent_at
            outcome.late_arrivals.append((probe, delay))
            log.info("%s arrived late, after %.0f s", probe.describe(), delay)
        elif now - probe.sent_at > lost_after:
            outcome.lost.append(probe)
            log.info("%s not arrived after %.0f s: lost", probe.describe(), now - probe.sent_at)


def run_roundtrip(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> ProbeOutcome:
    """Submit a marked message and wait in IMAP until it appears (in the
    folder, in Junk) or bounces; look for ``pending`` probes of earlier runs."""
    from .imap import Mailbox, RetrievalTimings  # not needed by submit mode: not loaded there

    outcome = ProbeOutcome(marker=new_marker(), retrieval=RetrievalTimings())
    message = lambda: build_message(settings, outcome.marker)  # noqa: E731 (built at DATA)
    log.info("marker %s", outcome.marker)
    trace = _trace if settings.verbose >= 3 else None
    writable = settings.cleanup or settings.purge_days is not None
    try:
        with ExitStack() as sessions:
            def watch(endpoint, folder, kind, timings) -> Watch:
                mailbox = sessions.enter_context(Mailbox(endpoint, settings.tls_context, folder, deadline, timings,
                                                         trace=trace, writable=writable and kind != "bounce"))
                since_uid = mailbox.open()
                log.info("IMAP %s as %s, %s folder %s, UIDNEXT %d", endpoint, endpoint.user, kind, folder, since_uid)
                return Watch(mailbox, kind, since_uid)

            # Log in and note UIDNEXT *before* submitting: everything at or
            # above it arrived after the probe started, so searches stop there.
            watches = [watch(settings.imap, settings.imap_folder, "target", outcome.retrieval)]
            junk = settings.junk_folder
            if junk is None and settings.junk_detect:
                junk = watches[0].mailbox.special_use_folder("\\Junk")
            if junk and junk != settings.imap_folder:
                watches.append(watch(settings.imap, junk, "junk", RetrievalTimings()))
            bounce = settings.bounce
            if bounce and not (bounce.endpoint == settings.imap and bounce.folder in (settings.imap_folder, junk)):
                watches.append(watch(bounce.endpoint, bounce.folder, "bounce", RetrievalTimings()))
            _submit(settings, deadline, outcome, message)
            wait_for_arrival(watches, outcome, settings.wait, deadline)
            log.info("IMAP searches: %d", sum(w.mailbox.timings.searches for w in watches))
            look_for_pending(watches[0].mailbox, outcome, pending, settings.lost_after)
            if outcome.found_uid is not None:
                found = outcome.found_in
                log.info("found UID %d in %s after %.3f s", outcome.found_uid, found.mailbox.folder, outcome.roundtrip)
                if found.kind == "junk":
                    outcome.junk_folder = found.mailbox.folder
                    outcome.retrieval = found.mailbox.timings  # the look into the folder that had it
                if settings.cleanup:
                    outcome.cleaned_up = found.mailbox.delete([outcome.found_uid])
                    log.info("deleted this run's message: %s", "done" if outcome.cleaned_up else
                             "flagged \\Deleted only (no UIDPLUS to expunge it alone)")
            if settings.purge_days is not None:
                for w in watches:
                    if w.kind != "bounce":
                        outcome.purged[w.mailbox.folder] = count = purge_old_probes(w.mailbox, settings.purge_days)
                        log.info("purged %d probe messages older than %g days from %s", count,
                                 settings.purge_days, w.mailbox.folder)
        if outcome.header is not None:
            _read_receiver_side(settings, deadline, outcome)
    except ProbeError as exc:
        outcome.error = exc
    except RunTimeout as exc:
        outcome.timeout = exc
    return outcome


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def poll_search_criteria(criteria, since: datetime) -> list:
    """Server-side SEARCH keys: SINCE has day granularity (RFC 3501), the
    exact window is applied to INTERNALDATE afterwards."""
    keys = ["SINCE", since.strftime("%d-%b-%Y")]
    if criteria.subject:
        keys += ["SUBJECT", _imap_quote(criteria.subject)]
    if criteria.sender:
        keys += ["FROM", _imap_quote(criteria.sender)]
    for name, value in criteria.headers:
        keys += ["HEADER", _imap_quote(name), _imap_quote(value)]
    return keys


def run_poll(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> ProbeOutcome:
    """Did a message matching the criteria arrive within the window?"""
    from .imap import Mailbox, RetrievalTimings

    outcome = ProbeOutcome(retrieval=RetrievalTimings())
    now = datetime.now(timezone.utc)
    since = now - timedelta(seconds=settings.poll.window)
    log.info("IMAP %s as %s, folder %s: %s since %s", settings.imap, settings.imap.user, settings.imap_folder,
             settings.poll.describe(), since.strftime("%Y-%m-%d %H:%M:%S UTC"))
    try:
        with Mailbox(settings.imap, settings.tls_context, settings.imap_folder, deadline, outcome.retrieval,
                     trace=_trace if settings.verbose >= 3 else None) as mailbox:
            mailbox.open()
            # the date prefilter is the server's; the day's earlier mail is
            # dropped here by INTERNALDATE
            uids = mailbox.search(*poll_search_criteria(settings.poll, since))
            dates = [date for date in mailbox.fetch_internaldates(uids).values() if date >= since]
            outcome.poll = PollFindings(since=since, matches=len(dates))
            if dates:
                outcome.poll.newest_age = max((now - max(dates)).total_seconds(), 0.0)
            log.info("%d matching since the start of that day, %d in the window", len(uids), len(dates))
    except ProbeError as exc:
        outcome.error = exc
    except RunTimeout as exc:
        outcome.timeout = exc
    return outcome
