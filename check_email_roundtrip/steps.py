"""The steps a probe run is made of, shared by the waiting round trip
(``probe.py``) and ``--no-wait`` (``nowait.py``): how the run reaches its
servers, signing in to IMAP and SMTP side by side, sending the probe, the
facts found so far (:class:`Draft`, frozen at the end), and a found
message's hops.

Knows nothing of Nagios, like the probe.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from .deadline import Deadline
from .errors import LocalError, ProbeError, Stopped
from .facts import (
    Arrival,
    Bounced,
    Hop,
    Housekeeping,
    ImapTimings,
    LateArrival,
    RoundtripResult,
    SmtpTimings,
    Submission,
    WatchKind,
)
from .mask import mask
from .memory import PendingProbe
from .oauth import Keyring
from .output import LOGGER, TRACE, threads_in_turn
from .session import PhaseTimes, Reach
from .settings import Endpoint, Security, Settings
from .smtp import SmtpSession, open_submission, submit_message
from .tls import Handshake, TlsClient

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

    from .imap import ImapSession
    from .session import Trace
    from .watch import Watch

log = logging.getLogger(LOGGER)


def _trace(line: str) -> None:
    log.log(TRACE, "%s", line)


def tracer(settings: Settings) -> Trace | None:
    return _trace if settings.verbose >= 3 else None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def reach_for(settings: Settings, deadline: Deadline) -> Reach:
    return Reach(deadline, TlsClient(settings.tls), tracer(settings), settings.address_family)


def required(value: Any, what: str) -> Any:
    """Settings the CLI guarantees for a mode; a bug of ours if missing."""
    if value is None:
        raise RuntimeError(f"settings lack {what}")
    return value


def open_smtp(settings: Settings, reach: Reach, keyring: Keyring, times: PhaseTimes) -> SmtpSession:
    """The SMTP session, connected, TLS, signed in: ready for MAIL FROM."""
    smtp: Endpoint = required(settings.smtp, "an SMTP server")
    secret = keyring.secret(smtp.login) if smtp.login else None
    log.info(
        "SMTP %s as %s, from %s to %s",
        smtp,
        smtp.user or "(no AUTH)",
        required(settings.envelope_from, "a sender"),
        required(settings.recipient, "a recipient"),
    )
    return open_submission(smtp, reach, settings.helo_name, times, secret)


def send(settings: Settings, session: SmtpSession, marker: str) -> tuple[Submission, Callable[[], None]]:
    """Submit the probe; the second value waits for the SMTP goodbye (QUIT,
    said in the background) and logs the phases."""
    from .message import build_message

    sender: str = required(settings.envelope_from, "a sender")
    recipient: str = required(settings.recipient, "a recipient")
    times = session.times
    submission, quit_said = submit_message(
        session, sender, [recipient], lambda: build_message(sender, recipient, marker)
    )
    log.info("SMTP accepted: %s", mask(submission.final_reply))
    # wall-clock times, to set against the servers' logs (and bench/'s)
    log.debug("MAIL FROM sent at %s", iso(submission.mail_from_wall))
    if submission.data_wall is not None:
        log.debug("DATA sent at %s", iso(submission.data_wall))

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
            smtp_session = open_smtp(settings, reach, keyring, smtp_times)
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
        self._work = work
        self._outcome: tuple[bool, Any] = (False, None)
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


class Draft:
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


def open_watches(
    settings: Settings, reach: Reach, keyring: Keyring, sessions: list[ImapSession]
) -> list[Watch]:
    """Log in (one session per mailbox: ``sessions`` gets them) and note each
    watched folder's UIDNEXT: the target first, then Junk, then a bounce
    folder.  Everything at or above a folder's UIDNEXT arrived after now."""
    from .imap import ImapSession
    from .watch import Watch

    imap: Endpoint = required(settings.imap, "an IMAP server")
    elsewhere = settings.elsewhere
    watches: list[Watch] = []

    def session_for(endpoint: Endpoint) -> ImapSession:
        for session in sessions:
            if session.endpoint == endpoint:
                return session
        session = ImapSession(endpoint, reach)
        sessions.append(session)
        session.open(keyring.secret(required(endpoint.login, "an IMAP login")))
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


def hops_of(header: bytes, start: float, settings: Settings) -> tuple[Hop, ...]:
    """A found probe's Received chain as delays from its MAIL FROM (``start``),
    trusted as its verdicts are (--authserv-id)."""
    from .hops import read_hops

    return read_hops(header, start, settings.verdicts.authserv_id)


def imap_timings(
    session: ImapSession,
    folder: str | None = None,
    search: float | None = None,
    fetch: float | None = None,
    searches: int | None = None,
) -> ImapTimings:
    """What one look into the mailbox cost: the session's sign-in phases,
    opening ``folder``, the search that found the message and its fetch."""
    times = session.times
    return ImapTimings(
        connect=times.get("connect"),
        starttls=times.get("starttls"),
        login=times.get("login"),
        select=session.select_seconds.get(folder) if folder is not None else None,
        search=search,
        fetch=fetch,
        searches=session.searches if searches is None else searches,
    )
