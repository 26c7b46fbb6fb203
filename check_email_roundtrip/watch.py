"""Waiting for the probe: every watched folder, as few sessions as possible.

One IMAP session watches the target folder and every other folder of the
same mailbox (Junk, and the bounce folder when it is there too): the target
stays open and is searched each round (``UID SEARCH UID <uidnext>:* TEXT
<marker>``, bounded, so a search costs the same in any folder size); the
others are asked their UIDNEXT by STATUS, which costs the server an index
lookup, and are opened and searched only when something new arrived there.
A bounce folder in another mailbox needs its own login: a second session.

Polling: the first search right after the server accepted the message, then
one every 10 ms for the first 2 s (where loopback and LAN deliveries land, so
the round trip is known to within ~10 ms), then waits growing by half each
time up to 1 s: after that the server sees at most one search a second.
IMAP IDLE is not used: Dovecot 2.3 tells an IDLE client about new mail
500 ms late, polling sees it sooner (bench/idle_vs_poll.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

from .deadline import SOCKET_MARGIN, Deadline
from .errors import Phase
from .facts import Arrival, Bounced, WatchKind
from .imap import ImapSession
from .imapsyntax import SearchKeys
from .message import Kind, classify
from .output import LOGGER
from .record import Record

log = logging.getLogger(LOGGER)

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


class Watch:
    """One folder looked into while waiting."""

    def __init__(
        self, session: ImapSession, folder: str, kind: WatchKind, since_uid: int, writable: bool = False
    ):
        self.session, self.folder, self.kind = session, folder, kind
        self.since_uid = since_uid  # UIDNEXT before the probe was sent: everything new is at or above it
        self.writable = writable
        self.checked_uid_next = since_uid  # a side folder's UIDNEXT when it was last searched
        self.classified: set[int] = set()  # UIDs already looked at


class Sighting(Record):
    """What one round of looking found (at most one of the two)."""

    arrival: Arrival | None = None
    bounced: Bounced | None = None
    search_seconds: float | None = None  # the search that saw it
    fetch_seconds: float | None = None  # the header fetch after it


class Watcher:
    """Every watched folder; ``home`` folders stay open in their session."""

    def __init__(self, watches: Sequence[Watch]):
        self.watches = list(watches)
        self.home: dict[int, Watch] = {}  # id(session) -> the folder it keeps open
        for watch in self.watches:
            self.home.setdefault(id(watch.session), watch)

    def look(self, marker: str, submitted_at: float) -> Sighting:
        """One round: search each home folder; STATUS the others, and search
        those where something arrived."""
        for watch in self.watches:
            home = self.home[id(watch.session)]
            if watch is not home:
                uid_next = watch.session.uid_next_of(watch.folder)
                if uid_next <= watch.checked_uid_next:
                    continue
                watch.session.open_folder(watch.folder, watch.writable)
                sighting = self._search(watch, marker, submitted_at)
                watch.checked_uid_next = uid_next
                home.session.open_folder(home.folder, home.writable)
            else:
                sighting = self._search(watch, marker, submitted_at)
            if sighting.arrival or sighting.bounced:
                return sighting
        return Sighting()

    def _search(self, watch: Watch, marker: str, submitted_at: float) -> Sighting:
        session = watch.session
        keys = SearchKeys().uids_from(watch.since_uid).text(marker)
        # "n:*" always includes the highest UID, even when it is below n
        # (RFC 3501 6.4.8): keep only UIDs that really are new.
        uids = sorted(
            uid for uid in session.search(keys) if uid >= watch.since_uid and uid not in watch.classified
        )
        search_seconds = session.last_seconds
        seen_at = time.monotonic()
        for uid in uids:
            watch.classified.add(uid)
            header = session.fetch_header(uid)
            kind = classify(header, marker)
            if kind is Kind.PROBE and watch.kind is not WatchKind.BOUNCE:
                return Sighting(
                    Arrival(watch.folder, watch.kind, uid, seen_at - submitted_at, header),
                    search_seconds=search_seconds,
                    fetch_seconds=session.last_seconds,
                )
            if kind is Kind.BOUNCE:
                from .dsn import parse_dsn

                bounce = parse_dsn(session.fetch_message(uid))
                if bounce is not None and bounce.failed:
                    return Sighting(bounced=Bounced(bounce, seen_at - submitted_at))
                if bounce is not None:
                    log.info(
                        "delivery status notification: %s %s, still waiting", bounce.action, bounce.describe()
                    )
        return Sighting()

    def wait(
        self,
        marker: str,
        submitted_at: float,
        wait: float,
        deadline: Deadline,
        idle: Callable[[], None] | None = None,
    ) -> Sighting | None:
        """Look until the probe or a bounce is seen, or ``wait`` seconds after
        MAIL FROM (None).  The round trip is taken when the search answered,
        not after a sleep.  ``idle`` runs once, in the first pause between
        searches (and counts against it): work the run needs later, done
        while the MTA is still delivering."""
        wait_ends = submitted_at + wait
        intervals = poll_intervals()
        again = False
        while True:
            if deadline.remaining() <= SOCKET_MARGIN:
                # -t ends before --wait: no search could finish in time; the
                # run ends at -t, naming the wait
                deadline.enter(Phase.DELIVERY)
                time.sleep(max(deadline.remaining(), 0.0))
                deadline.check()
            sighting = self.look(marker, submitted_at)
            if sighting.arrival or sighting.bounced:
                return sighting
            now = time.monotonic()
            if now >= wait_ends:
                return None
            # a search that announced new messages but found none is repeated
            # at once (once: a busy folder must not turn polling into a loop)
            again = not again and self.announced_new()
            if again:
                continue
            deadline.enter(Phase.DELIVERY)
            pause = min(next(intervals), wait_ends - now, max(deadline.remaining(), 0))
            if idle is not None:
                idle()
                idle = None
                pause -= time.monotonic() - now
            if pause > 0:
                time.sleep(pause)
            deadline.check()

    def announced_new(self) -> bool:
        """Whether the last round's searches were told of new messages."""
        return any(watch.session.announced_new for watch in self.home.values())

    @property
    def searches(self) -> int:
        return sum(session.searches for session in {id(w.session): w.session for w in self.watches}.values())
