"""Where the time went: a delivered message's Received chain as per-hop delays.

Knows nothing of Nagios.  ``read_hops`` takes the header block of a found
probe and the wall-clock time its MAIL FROM was sent, and returns one
:class:`~.facts.Hop` per Received header, oldest first: the seconds between
the previous stamp (for the first, MAIL FROM) and this one, which were spent
before the host that wrote it (``by``) had the message: in the previous
host's queue, on the way, greylisted by ``by``.

Every host prepends its Received header (RFC 5321 4.4), so the block holds
them newest first; they are read in reverse.  Liberal in what is read:
comments, folded lines, no ``by`` or ``with``, 8-bit text.  A header whose
date does not parse (``email.utils.parsedate_to_datetime``) is skipped, the
next hop then counting from the stamp before it.  Hostile input is bounded:
only the newest ``MAX_RECEIVED`` headers are read (the receiver's are on
top), each name cut to ``MAX_NAME`` characters.

Dates have one-second resolution and come from different clocks: a stamp
before the previous one is clock skew, counted 0 s and marked ``skewed``.
The first hop counts from the second MAIL FROM was sent in (the plugin's
clock, cut to whole seconds like the stamps), so that a stamp written in
that same second is 0 s, not a fraction of a second of "skew".

Trust (RFC 8601 section 5, the rule of the verdicts): anybody can write
Received headers into a message before sending it, with any host and date.
What the receiver wrote is known by position.  Its border MX adds its
Authentication-Results header while it accepts the message, and every
header is prepended: whatever stands above that header was added after it,
on the receiving side (the MX's own Received header, content filters, the
LMTP delivery to the mailbox), and whatever stands below it came in with
the message: the sender side's claims.  The MX's own Received header is
above its Authentication-Results with Postfix and a milter (seen on the
test stack: Postfix hides its own Received header from milters and inserts
theirs below it) and with Gmail.  A receiver that writes its
Authentication-Results above its own Received header has that hop counted
as a claim: too little trust, never too much.  No heuristic such as "the
first Received below it names the receiver as ``by``": that header is the
sender's to write.  Which Authentication-Results header is the receiver's
is the verdicts' rule (``verdicts.receiver_header``: the topmost, or with
``--authserv-id`` the topmost carrying it); no such header, no trusted hop.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone

from .facts import Hop
from .message import header_fields, parse_header
from .output import LOGGER
from .record import Record

log = logging.getLogger(LOGGER)

# Received headers read per message, the newest ones; Postfix's
# hopcount_limit (a message with more is bounced as looping).
MAX_RECEIVED = 50
MAX_NAME = 80  # characters of a host or protocol name kept
# RFC 5321 4.4: the clauses of a Received header before its ";" and date.
_CLAUSES = frozenset({"from", "by", "via", "with", "id", "for"})


class Stamp(Record):
    """One Received header, read."""

    by: str  # "" when it names none
    protocol: str  # its "with", "" when none
    stamped: datetime  # aware


def _without_comments(text: str) -> tuple[str, int]:
    """The text with its comments (nested, with quoted pairs) made spaces,
    and the index of its last ";" outside comments (-1: none)."""
    out: list[str] = []
    depth, escaped, last_semicolon = 0, False, -1
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and depth:
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            char = " "
        elif char == ";" and not depth:
            last_semicolon = len(out)
        out.append(" " if depth else char)
    return "".join(out), last_semicolon


def _date(text: str) -> datetime | None:
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
        # no zone, or "-0000": UTC (RFC 5322 3.3)
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_received(value: str) -> Stamp | None:
    """A Received header's ``by``, ``with`` and date; None when its date
    does not parse.  ``with`` is its first word (RFC 5321: an atom; Exim adds
    the TLS cipher after it, Microsoft writes "Microsoft SMTP Server")."""
    text, semicolon = _without_comments(value)
    if semicolon < 0:
        return None
    stamped = _date(" ".join(text[semicolon + 1 :].split()))
    if stamped is None:
        return None
    clauses: dict[str, str] = {}
    words = text[:semicolon].split()
    for word, following in zip(words, words[1:]):
        keyword = word.lower()
        if keyword in _CLAUSES and keyword not in clauses and following.lower() not in _CLAUSES:
            clauses[keyword] = following[:MAX_NAME]
    return Stamp(clauses.get("by", ""), clauses.get("with", ""), stamped)


def read_hops(header_block: bytes, start: float, authserv_id: str | None = None) -> tuple[Hop, ...]:
    """The Received chain of a header block as delays, oldest first; the
    first counts from ``start`` (MAIL FROM, epoch seconds)."""
    from .verdicts import receiver_header

    fields = header_fields(parse_header(header_block), ("received", "authentication-results"))
    results = [index for index, (name, _) in enumerate(fields) if name == "authentication-results"]
    receivers = receiver_header([fields[index][1] for index in results], authserv_id)
    # fields above this index were written by the receiving side
    boundary = results[receivers] if receivers is not None else -1
    received = [(index, value) for index, (name, value) in enumerate(fields) if name == "received"]
    if len(received) > MAX_RECEIVED:
        log.info("read the newest %d of %d Received headers", MAX_RECEIVED, len(received))
        received = received[:MAX_RECEIVED]
    hops: list[Hop] = []
    previous = float(math.floor(start))
    for index, value in reversed(received):
        stamp = parse_received(value)
        if stamp is None:
            log.debug("Received header skipped, its date does not parse: %.120s", value)
            continue
        try:
            stamped_at = stamp.stamped.timestamp()
        except (OverflowError, ValueError):
            continue
        gap = stamped_at - previous
        hops.append(Hop(stamp.by, stamp.protocol, stamp.stamped, max(gap, 0.0), gap < 0, index < boundary))
        previous = stamped_at
    return tuple(hops)
