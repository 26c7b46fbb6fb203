"""One probe run, end to end, as facts: what happened and how long it took.

Knows nothing of Nagios.  ``run_submit``, ``run_roundtrip`` and ``run_poll``
never raise for a failing server: they return the mode's frozen result (see
``facts.py``) whose ``error`` is the ProbeError (its timings hold the phases
that did complete), or whose ``timeout`` says the ``-t`` budget ran out and
in which stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, cast

from .deadline import Deadline
from .errors import LocalError, ProbeError, Stopped
from .facts import (
    Arrival,
    Bounced,
    Hop,
    Housekeeping,
    ImapTimings,
    LateArrival,
    PollResult,
    RoundtripResult,
    SmtpTimings,
    Submission,
    SubmitResult,
    WatchKind,
)
from .imapsyntax import SearchKeys
from .marker import MARKER_PATTERN, MARKER_PREFIX, new_marker
from .mask import mask
from .memory import PendingProbe
from .oauth import Keyring
from .output import LOGGER, TRACE, threads_in_turn
from .session import PhaseTimes, Reach, Trace
from .settings import Endpoint, Security, Settings
from .smtp import SmtpSession, open_submission, submit_message
from .tls import Handshake, TlsClient

if TYPE_CHECKING:
    from .imap import ImapSession
    from .watch import Watch

log = logging.getLogger(LOGGER)


def _trace(line: str) -> None:
    log.log(TRACE, "%s", line)


def _tracer(settings: Settings) -> Trace | None:
    return _trace if settings.verbose >= 3 else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def _reach(settings: Settings, deadline: Deadline) -> Reach:
    return Reach(deadline, TlsClient(settings.tls), _tracer(settings), settings.address_family)


def _required(value: Any, what: str) -> Any:
    """Settings the CLI guarantees for a mode; a bug of ours if missing."""
    if value is None:
        raise RuntimeError(f"settings lack {what}")
    return value


def _open_smtp(settings: Settings, reach: Reach, keyring: Keyring, times: PhaseTimes) -> SmtpSession:
    """The SMTP session, connected, TLS, signed in: ready for MAIL FROM."""
    smtp: Endpoint = _required(settings.smtp, "an SMTP server")
    secret = keyring.secret(smtp.login) if smtp.login else None
    log.info(
        "SMTP %s as %s, from %s to %s",
        smtp,
        smtp.user or "(no AUTH)",
        _required(settings.envelope_from, "a sender"),
        _required(settings.recipient, "a recipient"),
    )
    return open_submission(smtp, reach, settings.helo_name, times, secret)


def _send(settings: Settings, session: SmtpSession, marker: str) -> tuple[Submission, Callable[[], None]]:
    """Submit the probe; the second value waits for the SMTP goodbye (QUIT,
    said in the background) and logs the phases."""
    from .message import build_message

    sender: str = _required(settings.envelope_from, "a sender")
    recipient: str = _required(settings.recipient, "a recipient")
    times = session.times
    submission, quit_said = submit_message(
        session, sender, [recipient], lambda: build_message(sender, recipient, marker)
    )
    log.info("SMTP accepted: %s", mask(submission.final_reply))
    # wall-clock times, to set against the servers' logs (and bench/'s)
    log.debug("MAIL FROM sent at %s", _iso(submission.mail_from_wall))
    if submission.data_wall is not None:
        log.debug("DATA sent at %s", _iso(submission.data_wall))

    def goodbye() -> None:
        quit_said()
        timings = SmtpTimings.of(times)
        phases = (
            ("connect", timings.connect),
            ("starttls", timings.starttls),
            ("auth", timings.auth),
            ("submit", timings.submit),
            ("total", timings.total),
        )
        log.info(
            "SMTP phases: %s",
            ", ".join(f"{name} {value:.3f} s" for name, value in phases if value is not None),
        )

    return submission, goodbye


def open_both(
    settings: Settings, reach: Reach, keyring: Keyring, sessions: list[ImapSession], smtp_times: PhaseTimes
) -> tuple[list[Watch], SmtpSession]:
    """Sign in to IMAP (noting each watched folder's UIDNEXT) and to SMTP at
    the same time, IMAP in a thread of its own: only MAIL FROM has to wait
    for the UIDNEXT.  Each session times its own phases.  An IMAP failure is
    the one reported when both fail (it comes first in protocol order), and
    the log keeps that order: IMAP's lines, then SMTP's."""
    if any(e is not None and e.security is not Security.NONE for e in (settings.smtp, settings.imap)):
        reach.tls.context()  # the CA store loaded once, before the threads (and outside their phases)
    imap_side = Alongside(
        lambda: open_watches(settings, reach, keyring, sessions), "imap-sign-in", reach.deadline
    )
    with threads_in_turn():
        imap_side.start()
        try:
            smtp_session = _open_smtp(settings, reach, keyring, smtp_times)
        except (ProbeError, LocalError):
            imap_side.result()  # its error, if it has one, comes first
            raise
        try:
            watches = imap_side.result()
        except BaseException:
            smtp_session.close()
            raise
    return watches, smtp_session


class Alongside:
    """A function run in a thread beside the main one; ``result()`` waits for
    it and returns what it returned or raises what it raised.  A daemon: -t
    (raised in the main thread) never waits for it."""

    def __init__(self, work: Callable[[], Any], name: str, deadline: Deadline):
        self._work, self._outcome = work, cast("tuple[bool, Any]", (False, None))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._deadline = deadline

    def _run(self) -> None:
        try:
            self._outcome = (True, self._work())
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._outcome = (False, exc)

    def start(self) -> None:
        self._thread.start()

    def result(self) -> Any:
        with self._deadline.awaiting(self._thread):  # -t now names the thread's stage
            self._thread.join()
        done, value = self._outcome
        if not done:
            raise value
        return value


def run_submit(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> SubmitResult:
    marker = new_marker()
    times = PhaseTimes()
    reach = _reach(settings, deadline)
    tls, keyring = reach.tls, Keyring(reach)
    result = SubmitResult(marker, SmtpTimings())
    try:
        submission, goodbye = _send(settings, _open_smtp(settings, reach, keyring, times), marker)
        goodbye()
        result = result._replace(submission=submission)
    except (ProbeError, LocalError) as exc:
        result = result._replace(error=exc)
    except Stopped as exc:
        result = result._replace(stopped=exc)
    return result._replace(
        smtp=SmtpTimings.of(times), oauth_token=keyring.requested, tls=tuple(tls.handshakes)
    )


class _Draft:
    """A round trip's facts while they are being found; frozen at the end."""

    def __init__(self, marker: str):
        self.marker = marker
        self.smtp_times = PhaseTimes()
        self.submission: Submission | None = None
        self.imap: ImapTimings | None = None
        self.arrival: Arrival | None = None
        self.bounced: Bounced | None = None
        self.not_delivered_within: float | None = None
        self.verdicts: Any = None
        self.dns: Any = None
        self.late: list[LateArrival] = []
        self.lost: list[PendingProbe] = []
        self.deleted: bool | None = None
        self.purged: list[tuple[str, int]] = []
        self.error: ProbeError | LocalError | None = None
        self.stopped: Stopped | None = None  # -t ran out, or SIGTERM
        self.oauth_token: float | None = None
        self.no_wait = False
        self.judged: PendingProbe | None = None
        self.judged_age: float | None = None
        self.goodbye: Callable[[], None] = lambda: None  # waits for the SMTP QUIT said in the background
        self.tls: tuple[Handshake, ...] = ()

    def freeze(self) -> RoundtripResult:
        values = {name: getattr(self, name) for name in RoundtripResult._fields if hasattr(self, name)}
        values.update(
            smtp=SmtpTimings.of(self.smtp_times),
            late=tuple(self.late),
            lost=tuple(self.lost),
            housekeeping=Housekeeping(self.deleted, tuple(self.purged)),
        )
        return RoundtripResult(**values)


def run_roundtrip(
    settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()
) -> RoundtripResult:
    """Submit a marked message and wait in IMAP until it appears (in the
    folder, in Junk) or bounces; look for ``pending`` probes of earlier runs."""
    draft = _Draft(new_marker())
    draft.no_wait = settings.no_wait
    log.info("marker %s", draft.marker)
    reach = _reach(settings, deadline)
    tls, keyring = reach.tls, Keyring(reach)
    try:
        _roundtrip(settings, reach, keyring, pending, draft)
    except (ProbeError, LocalError) as exc:
        draft.error = exc
    except Stopped as exc:
        draft.stopped = exc
    draft.oauth_token = keyring.requested
    draft.tls = tuple(tls.handshakes)
    return draft.freeze()


def open_watches(
    settings: Settings, reach: Reach, keyring: Keyring, sessions: list[ImapSession]
) -> list[Watch]:
    """Log in (one session per mailbox: ``sessions`` gets them) and note each
    watched folder's UIDNEXT: the target first, then Junk, then a bounce
    folder.  Everything at or above a folder's UIDNEXT arrived after now."""
    from .imap import ImapSession
    from .watch import Watch

    imap: Endpoint = _required(settings.imap, "an IMAP server")
    elsewhere = settings.elsewhere
    watches: list[Watch] = []

    def session_for(endpoint: Endpoint) -> ImapSession:
        for session in sessions:
            if session.endpoint == endpoint:
                return session
        session = ImapSession(endpoint, reach)
        sessions.append(session)
        session.open(keyring.secret(_required(endpoint.login, "an IMAP login")))
        return session

    def watch(endpoint: Endpoint, folder: str, kind: WatchKind, writable: bool) -> Watch:
        session = session_for(endpoint)
        first = not any(w.session is session for w in watches)
        since_uid = session.open_folder(folder, writable) if first else session.uid_next_of(folder)
        log.info("IMAP %s as %s, %s folder %s, UIDNEXT %d", endpoint, endpoint.user, kind, folder, since_uid)
        return Watch(session, folder, kind, since_uid, writable)

    watches.append(watch(imap, settings.imap_folder, WatchKind.TARGET, elsewhere.writable))
    junk = elsewhere.junk_folder
    if junk is None and elsewhere.junk_detect:
        junk = sessions[0].special_use_folder("\\Junk")
    if junk and junk != settings.imap_folder:
        watches.append(watch(imap, junk, WatchKind.JUNK, elsewhere.writable))
    bounce = elsewhere.bounce
    if bounce and not (bounce.endpoint == imap and bounce.folder in (settings.imap_folder, junk)):
        watches.append(watch(bounce.endpoint, bounce.folder, WatchKind.BOUNCE, False))
    return watches


def _roundtrip(
    settings: Settings, reach: Reach, keyring: Keyring, pending: Sequence[PendingProbe], draft: _Draft
) -> None:
    from .watch import Watcher

    sessions: list[ImapSession] = []
    try:
        if settings.no_wait:
            from .nowait import judge_earlier

            watches = judge_earlier(settings, reach, keyring, pending, draft, sessions)
        else:
            # Log in and note UIDNEXT *before* submitting: everything at or
            # above it arrived after the probe started, so searches stop there.
            watches, smtp_session = open_both(settings, reach, keyring, sessions, draft.smtp_times)
            watcher = Watcher(watches)
            draft.submission, draft.goodbye = _send(settings, smtp_session, draft.marker)
            mail_from_at = draft.submission.mail_from_at
            sighting = watcher.wait(draft.marker, mail_from_at, settings.wait, reach.deadline)
            log.info("IMAP searches: %d", watcher.searches)
            if sighting is None:
                draft.not_delivered_within = settings.wait
            else:
                draft.arrival, draft.bounced = sighting.arrival, sighting.bounced
                if sighting.arrival is not None:
                    start = draft.submission.mail_from_wall
                    draft.arrival = sighting.arrival._replace(
                        hops=hops_of(sighting.arrival.header, start, settings)
                    )
                    session = sessions[0]
                    draft.imap = ImapTimings(
                        connect=session.times.get("connect"),
                        starttls=session.times.get("starttls"),
                        login=session.times.get("login"),
                        select=session.select_seconds.get(sighting.arrival.folder),
                        search=sighting.search_seconds,
                        fetch=sighting.fetch_seconds,
                        searches=watcher.searches,
                    )
                    log.info(
                        "found UID %d in %s after %.3f s",
                        sighting.arrival.uid,
                        sighting.arrival.folder,
                        sighting.arrival.roundtrip,
                    )
            target = watches[0]
            if target.session.selected != target.folder:
                target.session.open_folder(target.folder, target.writable)
            look_for_pending(target.session, pending, settings, draft)
        _housekeeping(settings, watches, draft)
    finally:
        draft.goodbye()  # QUIT went on while we looked: its 221 (or 2 s) is waited for here
        for session in sessions:
            session.close()
    if draft.arrival is not None:
        _read_receiver_side(settings, reach.deadline, draft)


def _housekeeping(settings: Settings, watches: Sequence[Watch], draft: _Draft) -> None:
    """--cleanup (the message found and judged) and --purge-older-than."""
    elsewhere = settings.elsewhere
    arrival = draft.arrival
    if arrival is not None and elsewhere.cleanup:
        session = next(w.session for w in watches if w.folder == arrival.folder)
        if session.selected != arrival.folder or not session.writable:
            session.open_folder(arrival.folder, True)
        draft.deleted = session.delete([arrival.uid])
        whose = "the judged probe's" if draft.no_wait else "this run's"
        log.info(
            "deleted %s message: %s",
            whose,
            "done" if draft.deleted else "flagged \\Deleted only (no UIDPLUS to expunge it alone)",
        )
    if elsewhere.purge_days is not None:
        for w in watches:
            if w.kind is not WatchKind.BOUNCE:
                count = purge_old_probes(w.session, w.folder, elsewhere.purge_days)
                draft.purged.append((w.folder, count))
                log.info(
                    "purged %d probe messages older than %g days from %s",
                    count,
                    elsewhere.purge_days,
                    w.folder,
                )


def purge_old_probes(session: ImapSession, folder: str, days: float) -> int:
    """Delete probe messages older than ``days`` in one folder: found by the
    marker prefix on the server, each Subject checked for a whole marker, so
    nothing without one is ever touched."""
    session.open_folder(folder, True)
    before = datetime.now(timezone.utc) - timedelta(days=days)
    uids = session.search(SearchKeys().before(before).subject(MARKER_PREFIX))
    subjects = session.fetch_subjects(uids)
    doomed = [uid for uid, subject in subjects.items() if MARKER_PATTERN.search(subject)]
    session.delete(doomed)
    return len(doomed)


def look_for_pending(
    session: ImapSession, pending: Sequence[PendingProbe], settings: Settings, draft: _Draft
) -> None:
    """Earlier probes that were not delivered in time: arrived since, or lost?"""
    if not pending:
        return
    since = datetime.fromtimestamp(min(probe.sent_at for probe in pending), timezone.utc)
    uids = session.search(SearchKeys().since(since).any_subject([probe.marker for probe in pending]))
    subjects = session.fetch_subjects(uids)
    arrived = session.fetch_internaldates(uids)
    found = {
        probe.marker: next((uid for uid, subject in subjects.items() if probe.marker in subject), None)
        for probe in pending
    }
    headers = session.fetch_headers(sorted({uid for uid in found.values() if uid is not None}))
    now = time.time()
    for probe in pending:
        uid = found[probe.marker]
        if uid is not None:
            delay = (
                max(arrived[uid].timestamp() - probe.sent_at, 0.0) if uid in arrived else now - probe.sent_at
            )
            hops = hops_of(headers[uid], probe.sent_at, settings) if uid in headers else ()
            draft.late.append(LateArrival(probe, delay, hops))
            log.info("%s arrived late, after %.0f s", probe.describe(), delay)
        elif now - probe.sent_at > settings.memory.lost_after:
            draft.lost.append(probe)
            log.info("%s not arrived after %.0f s: lost", probe.describe(), now - probe.sent_at)


def hops_of(header: bytes, start: float, settings: Settings) -> tuple[Hop, ...]:
    """A found probe's Received chain as delays from its MAIL FROM (``start``),
    trusted as its verdicts are (--authserv-id)."""
    from .hops import read_hops

    return read_hops(header, start, settings.verdicts.authserv_id)


def _read_receiver_side(settings: Settings, deadline: Deadline, draft: _Draft) -> None:
    """The verdicts in the found message's header, and the DNS behind them."""
    from .verdicts import read_verdicts

    arrival: Arrival = _required(draft.arrival, "an arrival")
    verdicts = read_verdicts(arrival.header, settings.verdicts.authserv_id)
    for text in verdicts.ignored:
        log.info("ignored Authentication-Results %s", text)
    if settings.verdicts.dns_checks:
        from .dnscheck import check_dns

        draft.dns = check_dns(
            arrival.header,
            _required(settings.envelope_from, "a sender"),
            verdicts.sender_ip,
            settings.verdicts.nameserver,
            deadline,
        )
        for note in draft.dns.notes:
            log.info("%s", note)
        if draft.dns.dmarc_policy:
            verdicts = verdicts.with_dmarc_policy(draft.dns.dmarc_policy)
    draft.verdicts = verdicts


def run_poll(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> PollResult:
    """Did a message matching the criteria arrive within the window?"""
    from .imap import ImapSession

    imap: Endpoint = _required(settings.imap, "an IMAP server")
    criteria = _required(settings.poll, "poll criteria")
    now = datetime.now(timezone.utc)
    since = now - timedelta(seconds=criteria.window)
    log.info(
        "IMAP %s as %s, folder %s: %s since %s",
        imap,
        imap.user,
        settings.imap_folder,
        criteria.describe(),
        since.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    reach = _reach(settings, deadline)
    tls, keyring = reach.tls, Keyring(reach)
    session = ImapSession(imap, reach)
    result = PollResult(since)
    try:
        session.open(keyring.secret(_required(imap.login, "an IMAP login")))
        session.open_folder(settings.imap_folder)
        # The date prefilter is the server's (SINCE has day granularity); the
        # day's earlier mail is dropped here by INTERNALDATE.
        keys = SearchKeys().since(since)
        if criteria.subject:
            keys.subject(criteria.subject)
        if criteria.sender:
            keys.sender(criteria.sender)
        for name, value in criteria.headers:
            keys.header(name, value)
        uids = session.search(keys)
        dates = [date for date in session.fetch_internaldates(uids).values() if date >= since]
        log.info("%d matching since the start of that day, %d in the window", len(uids), len(dates))
        newest_age = max((now - max(dates)).total_seconds(), 0.0) if dates else None
        result = PollResult(since, _poll_timings(session), len(dates), newest_age)
    except (ProbeError, LocalError) as exc:
        result = PollResult(since, _poll_timings(session), error=exc)
    except Stopped as exc:
        result = PollResult(since, _poll_timings(session), stopped=exc)
    finally:
        session.close()
    return result._replace(oauth_token=keyring.requested, tls=tuple(tls.handshakes))


def _poll_timings(session: ImapSession) -> ImapTimings:
    times = session.times
    return ImapTimings(
        connect=times.get("connect"),
        starttls=times.get("starttls"),
        login=times.get("login"),
        searches=session.searches,
    )
