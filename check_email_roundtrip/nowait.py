"""``--no-wait``: send now, judge the probes of earlier runs.

A scheduler that kills a check after 10 or 30 s cannot see a round trip of
60 s inside one run.  Checkmk's mail loop solves this by sending a message
each run and judging the messages of earlier runs; so does this mode:

1. log in to IMAP (one session), submit this run's probe, and remember it
   (the state file: its marker, its MAIL FROM time, its queue id);
2. look for the probes earlier runs remembered, in the folder, in Junk and
   in a bounce folder (``TEXT`` search for their markers since the oldest);
3. judge the newest of them (the previous run's):
   - arrived: its round trip is the server's own delivery time (IMAP
     INTERNALDATE, when the server stored it; whole seconds) minus its
     recorded MAIL FROM, so -w/-c and the 60/300 s defaults work from a
     10 s scheduler slot;
   - bounced, or filed into Junk: as in the waiting mode;
   - still missing: its age is judged against -w/-c ("not delivered after
     N s" beyond -c);
   older ones that arrived are reported late, those past --lost-after lost;
4. the first run, with nothing earlier to judge, says so and is OK.

The receiver's verdicts (and ``--dns-checks``) are read from the judged
probe's header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from .facts import Arrival, Bounced, LateArrival, WatchKind
from .imapsyntax import SearchKeys
from .memory import PendingProbe
from .message import Kind, classify
from .output import LOGGER
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from .imap import ImapSession
    from .oauth import Keyring
    from .session import Reach
    from .settings import Settings
    from .steps import Draft
    from .watch import Watch

log = logging.getLogger(LOGGER)


class Found(Record):
    """An earlier probe's message, or a bounce of it, where it was found."""

    watch: Watch
    uid: int
    kind: Kind
    header: bytes
    stored_at: float  # INTERNALDATE, epoch seconds
    search_seconds: float
    fetch_seconds: float


def judge_earlier(
    settings: Settings,
    reach: Reach,
    keyring: Keyring,
    pending: Sequence[PendingProbe],
    draft: Draft,
    sessions: list[ImapSession],
) -> list[Watch]:
    """Submit this run's probe and judge the earlier ones; returns the
    watches (``sessions`` gets their sessions, the caller's to close)."""
    from .steps import hops_of, imap_timings, open_both, send

    watches, smtp_session = open_both(settings, reach, keyring, sessions, draft.smtp_times)
    draft.submission, draft.goodbye = send(settings, smtp_session, draft.marker)
    earlier = sorted(pending, key=lambda probe: probe.sent_at)
    if not earlier:
        log.info("first run: no earlier probe to judge")
        return watches
    found = _look(watches, earlier)
    now = time.time()
    judged = earlier[-1]
    draft.judged = judged
    for probe in earlier:
        hits = found.get(probe.marker, [])
        message = next(
            (hit for hit in hits if hit.kind is Kind.PROBE and hit.watch.kind is not WatchKind.BOUNCE), None
        )
        bounce = next((hit for hit in hits if hit.kind is Kind.BOUNCE), None)
        delay = max(message.stored_at - probe.sent_at, 0.0) if message else None
        if probe is judged:
            if message is not None and delay is not None:
                draft.arrival = Arrival(
                    message.watch.folder,
                    message.watch.kind,
                    message.uid,
                    delay,
                    message.header,
                    hops_of(message.header, probe.sent_at, settings),
                )
                draft.imap = imap_timings(
                    message.watch.session, message.watch.folder, message.search_seconds, message.fetch_seconds
                )
                log.info(
                    "%s found in %s: delivered %.0f s after it was sent (server time)",
                    probe.describe(),
                    message.watch.folder,
                    delay,
                )
            elif bounce is not None and _bounced(bounce, draft, probe):
                pass
            else:
                draft.judged_age = now - probe.sent_at
                log.info("%s not delivered after %.0f s", probe.describe(), draft.judged_age)
        elif message is not None and delay is not None:
            draft.late.append(LateArrival(probe, delay, hops_of(message.header, probe.sent_at, settings)))
            log.info("%s arrived late, after %.0f s", probe.describe(), delay)
        elif now - probe.sent_at > settings.memory.lost_after:
            draft.lost.append(probe)
            log.info("%s not arrived after %.0f s: lost", probe.describe(), now - probe.sent_at)
    return watches


def _bounced(hit: Found, draft: Draft, probe: PendingProbe) -> bool:
    from .dsn import parse_dsn

    bounce = parse_dsn(hit.watch.session.fetch_message(hit.uid))
    if bounce is None or not bounce.failed:
        return False
    draft.bounced = Bounced(bounce, max(hit.stored_at - probe.sent_at, 0.0))
    return True


def _look(watches: Sequence[Watch], earlier: Sequence[PendingProbe]) -> dict[str, list[Found]]:
    """Every message quoting an earlier probe's marker, by marker."""
    since = datetime.fromtimestamp(earlier[0].sent_at, timezone.utc)
    markers = [probe.marker for probe in earlier]
    found: dict[str, list[Found]] = {}
    for watch in watches:
        session = watch.session
        if session.selected != watch.folder:
            session.open_folder(watch.folder, watch.writable)
        uids = session.search(SearchKeys().since(since).any_text(markers))
        search_seconds = session.last_seconds
        if not uids:
            continue
        stored = session.fetch_internaldates(uids)
        for uid in uids:
            header = session.fetch_header(uid)
            fetch_seconds = session.last_seconds
            when = stored.get(uid)
            stored_at = when.timestamp() if when else time.time()
            quoted = [marker for marker in markers if classify(header, marker) is Kind.PROBE]
            kind = Kind.PROBE
            if not quoted and classify(header, markers[0]) is Kind.BOUNCE:
                # a bounce quotes the probe in its body, not its header
                body = session.fetch_message(uid)
                quoted = [marker for marker in markers if marker.encode() in body]
                kind = Kind.BOUNCE
            for marker in quoted:
                found.setdefault(marker, []).append(
                    Found(watch, uid, kind, header, stored_at, search_seconds, fetch_seconds)
                )
    # back to the target folder: clean-up and purge expect it open
    target = watches[0]
    if target.session.selected != target.folder:
        target.session.open_folder(target.folder, target.writable)
    return found
