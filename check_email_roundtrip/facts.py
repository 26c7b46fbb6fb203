"""What a run found out: one frozen result type per mode.

The probe (``probe.py``) returns one of :class:`SubmitResult`,
:class:`RoundtripResult` or :class:`PollResult`; the nagiosplugin layer and
the renderers read them and never change them.  A result that ``stopped``
carries the :class:`~.errors.ProbeError` (a fact about the service) or the
:class:`~.errors.Stopped` (the ``-t`` budget ran out, or SIGTERM) that ended the run;
its timings then hold the phases that did complete.

Each type is a :class:`~.record.Record`, a named tuple (record.py says why
not ``typing.NamedTuple`` itself).
"""

from __future__ import annotations

import enum
from datetime import datetime

from .errors import LocalError, ProbeError, Stopped
from .memory import PendingProbe
from .record import Record
from .session import PhaseTimes

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Union

    from .dnscheck import DnsReport
    from .dsn import Bounce
    from .tls import Handshake
    from .verdicts import AuthVerdicts


class WatchKind(enum.Enum):
    """Why a folder is watched while waiting."""

    TARGET = "target"  # --imap-folder: where the probe should land
    JUNK = "junk"  # where a spam filter may have put it
    BOUNCE = "bounce"  # the sender's folder, for bounces of the probe

    def __str__(self) -> str:
        return self.value


class Submission(Record):
    final_reply: str
    # Postfix, Exim, Exchange and most others name the queue entry in the final
    # reply; quoting it lets the admin grep the relay's log for this probe.
    queue_id: str | None
    # when MAIL FROM was sent: the round trip starts here
    mail_from_at: float  # time.monotonic()
    mail_from_wall: float  # time.time(), for later runs and the log
    data_wall: float | None = None  # time.time() when DATA was sent (the log, bench/)


class SmtpTimings(Record):
    """Seconds per SMTP phase (see ``smtp.py``); None: did not run or complete."""

    connect: float | None = None
    starttls: float | None = None
    auth: float | None = None
    submit: float | None = None
    total: float | None = None

    @classmethod
    def of(cls, times: PhaseTimes) -> SmtpTimings:
        return cls(*(times.get(name) for name in ("connect", "starttls", "auth", "submit", "total")))


class ImapTimings(Record):
    """One look into the mailbox: what finding the message cost, step by step."""

    connect: float | None = None  # TCP (+ TLS for implicit TLS) + greeting
    starttls: float | None = None
    login: float | None = None
    select: float | None = None  # opening the folder the message was found in
    search: float | None = None  # the search that found the message
    fetch: float | None = None  # header fetch of the found message
    searches: int = 0

    @property
    def cycle(self) -> float | None:
        """The whole look, when a search found something; else None."""
        if self.search is None:
            return None
        steps = (self.connect, self.starttls, self.login, self.select, self.search, self.fetch)
        return sum(step for step in steps if step is not None)


class Hop(Record):
    """One step of a delivered message's way, from its Received chain, oldest
    first: the time between the previous stamp and this one was spent before
    ``by`` (in the previous host's queue, the connection, ``by`` accepting it)."""

    by: str  # the host that added the Received header ("by ..."); "" when it named none
    protocol: str  # its "with ..." (ESMTPSA, ESMTPS, LMTP, ...); "" when none
    stamped: datetime  # the header's date (one-second resolution)
    seconds: float  # since the previous stamp, or since MAIL FROM for the first; never negative
    skewed: bool  # the stamp was before the previous one: the clocks disagree, clamped to 0
    trusted: bool  # written by the receiving side: above its Authentication-Results header (hops.py)


class Arrival(Record):
    """This run's probe, found."""

    folder: str
    kind: WatchKind  # TARGET or JUNK
    uid: int
    roundtrip: float  # seconds from MAIL FROM until the search saw it
    header: bytes  # its header block, for the verdicts
    hops: tuple[Hop, ...] = ()  # its Received chain as delays


class Bounced(Record):
    """A bounce of this run's probe came back."""

    bounce: Bounce
    after: float  # seconds after MAIL FROM


class LateArrival(Record):
    probe: PendingProbe
    delay: float  # seconds from its MAIL FROM to its INTERNALDATE
    hops: tuple[Hop, ...] = ()  # its Received chain, when its header was read


class Housekeeping(Record):
    deleted: bool | None = None  # --cleanup: this run's message is gone (None: not asked)
    purged: tuple[tuple[str, int], ...] = ()  # --purge-older-than: (folder, count)


class SubmitResult(Record):
    marker: str
    smtp: SmtpTimings
    submission: Submission | None = None
    error: ProbeError | LocalError | None = None
    stopped: Stopped | None = None  # -t ran out, or SIGTERM
    oauth_token: float | None = None  # seconds spent getting an access token, when one was requested
    tls: tuple[Handshake, ...] = ()  # every TLS handshake of the run, in order


class RoundtripResult(Record):
    marker: str
    smtp: SmtpTimings
    submission: Submission | None = None
    imap: ImapTimings | None = None
    arrival: Arrival | None = None
    bounced: Bounced | None = None
    not_delivered_within: float | None = None  # set when --wait ran out
    verdicts: AuthVerdicts | None = None  # the receiver's, once found
    dns: DnsReport | None = None  # with --dns-checks
    late: tuple[LateArrival, ...] = ()  # earlier runs' probes that arrived since
    lost: tuple[PendingProbe, ...] = ()  # earlier runs' probes now counted lost
    housekeeping: Housekeeping = Housekeeping()
    error: ProbeError | LocalError | None = None
    stopped: Stopped | None = None  # -t ran out, or SIGTERM
    oauth_token: float | None = None  # seconds spent getting an access token, when one was requested
    # --no-wait: this run only sends; ``arrival``/``bounced`` are those of the
    # earlier probe judged (``judged``), whose round trip is the server's
    # delivery time minus its MAIL FROM; ``judged_age`` is set while it is missing
    no_wait: bool = False
    judged: PendingProbe | None = None
    judged_age: float | None = None
    tls: tuple[Handshake, ...] = ()  # every TLS handshake of the run, in order

    @property
    def roundtrip(self) -> float | None:
        return self.arrival.roundtrip if self.arrival else None


class PollResult(Record):
    since: datetime  # start of the window (UTC)
    imap: ImapTimings | None = None
    matches: int | None = None  # messages matching in the window
    newest_age: float | None = None  # seconds since the newest match arrived (INTERNALDATE)
    error: ProbeError | LocalError | None = None
    stopped: Stopped | None = None  # -t ran out, or SIGTERM
    oauth_token: float | None = None  # seconds spent getting an access token, when one was requested
    tls: tuple[Handshake, ...] = ()  # every TLS handshake of the run, in order


if TYPE_CHECKING:
    ProbeResult = Union[SubmitResult, RoundtripResult, PollResult]
