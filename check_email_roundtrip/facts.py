"""What a run found out: one frozen result type per mode.

The probe (``probe.py``) returns one of :class:`SubmitResult`,
:class:`RoundtripResult` or :class:`PollResult`; the nagiosplugin layer and
the renderers read them and never change them.  A result that ``stopped``
carries the :class:`~.errors.ProbeError` (a fact about the service) or the
:class:`~.errors.Stopped` (the ``-t`` budget ran out, or SIGTERM) that ended the run;
its timings then hold the phases that did complete.

Each type is a :class:`~.record.Record`, a named tuple (record.py says why
not ``typing.NamedTuple`` itself); the fields say ``Optional[...]``, which
Python 3.9 can evaluate.
"""

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Optional, Union

from .errors import LocalError, ProbeError, Stopped
from .memory import PendingProbe
from .record import Record
from .session import PhaseTimes

if TYPE_CHECKING:
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
    queue_id: Optional[str]
    # when MAIL FROM was sent: the round trip starts here
    mail_from_at: float  # time.monotonic()
    mail_from_wall: float  # time.time(), for later runs and the log
    data_wall: Optional[float] = None  # time.time() when DATA was sent (the log, bench/)


class SmtpTimings(Record):
    """Seconds per SMTP phase (see ``smtp.py``); None: did not run or complete."""

    connect: Optional[float] = None
    starttls: Optional[float] = None
    auth: Optional[float] = None
    submit: Optional[float] = None
    total: Optional[float] = None

    @classmethod
    def of(cls, times: PhaseTimes) -> "SmtpTimings":
        return cls(*(times.get(name) for name in ("connect", "starttls", "auth", "submit", "total")))


class ImapTimings(Record):
    """One look into the mailbox: what finding the message cost, step by step."""

    connect: Optional[float] = None  # TCP (+ TLS for implicit TLS) + greeting
    starttls: Optional[float] = None
    login: Optional[float] = None
    select: Optional[float] = None  # opening the folder the message was found in
    search: Optional[float] = None  # the search that found the message
    fetch: Optional[float] = None  # header fetch of the found message
    searches: int = 0

    @property
    def cycle(self) -> "float | None":
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

    bounce: "Bounce"
    after: float  # seconds after MAIL FROM


class LateArrival(Record):
    probe: PendingProbe
    delay: float  # seconds from its MAIL FROM to its INTERNALDATE
    hops: tuple[Hop, ...] = ()  # its Received chain, when its header was read


class Housekeeping(Record):
    deleted: Optional[bool] = None  # --cleanup: this run's message is gone (None: not asked)
    purged: tuple[tuple[str, int], ...] = ()  # --purge-older-than: (folder, count)


class SubmitResult(Record):
    marker: str
    smtp: SmtpTimings
    submission: Optional[Submission] = None
    error: Optional[Union[ProbeError, LocalError]] = None
    stopped: Optional[Stopped] = None  # -t ran out, or SIGTERM
    oauth_token: Optional[float] = None  # seconds spent getting an access token, when one was requested
    tls: "tuple[Handshake, ...]" = ()  # every TLS handshake of the run, in order


class RoundtripResult(Record):
    marker: str
    smtp: SmtpTimings
    submission: Optional[Submission] = None
    imap: Optional[ImapTimings] = None
    arrival: Optional[Arrival] = None
    bounced: Optional[Bounced] = None
    not_delivered_within: Optional[float] = None  # set when --wait ran out
    verdicts: "AuthVerdicts | None" = None  # the receiver's, once found
    dns: "DnsReport | None" = None  # with --dns-checks
    late: tuple[LateArrival, ...] = ()  # earlier runs' probes that arrived since
    lost: tuple[PendingProbe, ...] = ()  # earlier runs' probes now counted lost
    housekeeping: Housekeeping = Housekeeping()
    error: Optional[Union[ProbeError, LocalError]] = None
    stopped: Optional[Stopped] = None  # -t ran out, or SIGTERM
    oauth_token: Optional[float] = None  # seconds spent getting an access token, when one was requested
    # --no-wait: this run only sends; ``arrival``/``bounced`` are those of the
    # earlier probe judged (``judged``), whose round trip is the server's
    # delivery time minus its MAIL FROM; ``judged_age`` is set while it is missing
    no_wait: bool = False
    judged: Optional[PendingProbe] = None
    judged_age: Optional[float] = None
    tls: "tuple[Handshake, ...]" = ()  # every TLS handshake of the run, in order

    @property
    def roundtrip(self) -> "float | None":
        return self.arrival.roundtrip if self.arrival else None


class PollResult(Record):
    since: datetime  # start of the window (UTC)
    imap: Optional[ImapTimings] = None
    matches: Optional[int] = None  # messages matching in the window
    newest_age: Optional[float] = None  # seconds since the newest match arrived (INTERNALDATE)
    error: Optional[Union[ProbeError, LocalError]] = None
    stopped: Optional[Stopped] = None  # -t ran out, or SIGTERM
    oauth_token: Optional[float] = None  # seconds spent getting an access token, when one was requested
    tls: "tuple[Handshake, ...]" = ()  # every TLS handshake of the run, in order


ProbeResult = Union[SubmitResult, RoundtripResult, PollResult]
