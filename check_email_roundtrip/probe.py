"""One probe run, end to end, as facts: what happened and how long it took.

Knows nothing of Nagios.  ``run_submit``, ``run_roundtrip`` and ``run_poll``
never raise for a failing server: they return the mode's frozen result (see
``facts.py``) whose ``error`` is the ProbeError (its timings hold the phases
that did complete), or whose ``timeout`` says the ``-t`` budget ran out and
in which stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from .deadline import Deadline
from .errors import LocalError, ProbeError, Stopped
from .facts import (
    Arrival,
    ImapTimings,
    LateArrival,
    PollResult,
    RoundtripResult,
    SmtpTimings,
    SubmitResult,
    WatchKind,
)
from .imapsyntax import SearchKeys
from .marker import MARKER_PATTERN, MARKER_PREFIX, new_marker
from .memory import PendingProbe
from .oauth import Keyring
from .output import LOGGER, threads_in_turn
from .session import PhaseTimes, Reach
from .settings import Endpoint, Settings
from .steps import (
    Alongside,
    Draft,
    hops_of,
    imap_timings,
    open_both,
    open_smtp,
    reach_for,
    required,
    send,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from .imap import ImapSession
    from .watch import Watch

log = logging.getLogger(LOGGER)


def run_submit(settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()) -> SubmitResult:
    marker = new_marker()
    times = PhaseTimes()
    reach = reach_for(settings, deadline)
    tls, keyring = reach.tls, Keyring(reach)
    result = SubmitResult(marker, SmtpTimings())
    try:
        submission, goodbye = send(settings, open_smtp(settings, reach, keyring, times), marker)
        goodbye()
        result = result._replace(submission=submission)
    except (ProbeError, LocalError) as exc:
        result = result._replace(error=exc)
    except Stopped as exc:
        result = result._replace(stopped=exc)
    return result._replace(
        smtp=SmtpTimings.of(times), oauth_token=keyring.requested, tls=tuple(tls.handshakes)
    )


def run_roundtrip(
    settings: Settings, deadline: Deadline, pending: Sequence[PendingProbe] = ()
) -> RoundtripResult:
    """Submit a marked message and wait in IMAP until it appears (in the
    folder, in Junk) or bounces; look for ``pending`` probes of earlier runs."""
    draft = Draft(new_marker())
    draft.no_wait = settings.no_wait
    log.info("marker %s", draft.marker)
    reach = reach_for(settings, deadline)
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


def _roundtrip(
    settings: Settings, reach: Reach, keyring: Keyring, pending: Sequence[PendingProbe], draft: Draft
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
            draft.submission, draft.goodbye = send(settings, smtp_session, draft.marker)
            mail_from_at = draft.submission.mail_from_at
            sighting = watcher.wait(draft.marker, mail_from_at, settings.wait, reach.deadline, _load_readers)
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
                    draft.imap = imap_timings(
                        sessions[0],
                        sighting.arrival.folder,
                        sighting.search_seconds,
                        sighting.fetch_seconds,
                        watcher.searches,
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
    except BaseException:
        draft.goodbye()
        _close_all(sessions)
        raise
    draft.goodbye()  # QUIT went on while we looked: its 221 (or 2 s) is waited for here
    # LOGOUT goes on while the found header is read (about 1.5 ms, a server's
    # answer, off the wall time); its log lines still come first
    with threads_in_turn():
        logout = Alongside(lambda: _close_all(sessions), "imap-logout", reach.deadline)
        logout.start()
        try:
            if draft.arrival is not None:
                _read_receiver_side(settings, reach.deadline, draft)
        finally:
            logout.result()


def _close_all(sessions: Sequence[ImapSession]) -> None:
    for session in sessions:
        session.close()


def _housekeeping(settings: Settings, watches: Sequence[Watch], draft: Draft) -> None:
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
    session: ImapSession, pending: Sequence[PendingProbe], settings: Settings, draft: Draft
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


def _load_readers() -> None:
    """Make ready what reading a found probe takes (the email package's
    parser, its hops, its verdicts and authres, the certificate facts) in the
    first pause of the wait, while the MTA is still delivering, not after the
    probe was found: about 9 ms off the round trip's wall time, nothing off
    its CPU but one parse of a sample header (verdicts.warm_up)."""
    import email.parser  # noqa: F401

    from . import certinfo, hops, verdicts  # noqa: F401

    try:
        import authres  # noqa: F401
    except ImportError:
        return  # a missing dependency is reported where the verdicts are read
    verdicts.warm_up()


def _read_receiver_side(settings: Settings, deadline: Deadline, draft: Draft) -> None:
    """The verdicts in the found message's header, and the DNS behind them."""
    from .verdicts import read_verdicts

    arrival: Arrival = required(draft.arrival, "an arrival")
    verdicts = read_verdicts(arrival.header, settings.verdicts.authserv_id)
    for text in verdicts.ignored:
        log.info("ignored Authentication-Results %s", text)
    if settings.verdicts.dns_checks:
        from .dnscheck import check_dns

        draft.dns = check_dns(
            arrival.header,
            required(settings.envelope_from, "a sender"),
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

    imap: Endpoint = required(settings.imap, "an IMAP server")
    criteria = required(settings.poll, "poll criteria")
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
    reach = reach_for(settings, deadline)
    tls, keyring = reach.tls, Keyring(reach)
    session = ImapSession(imap, reach)
    result = PollResult(since)
    try:
        session.open(keyring.secret(required(imap.login, "an IMAP login")))
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
    return imap_timings(session)
