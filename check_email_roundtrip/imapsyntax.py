"""IMAP's own syntax, in one place: strings, mailbox names, dates, search keys.

imaplib sends command arguments exactly as it is given them, so everything
the probe puts on an IMAP command line is built here:

- quoted strings (RFC 3501 section 4.3) and mailbox names in modified UTF-7
  (section 5.1.3), and the way back for names the server sends in LIST;
- the two date formats: ``date`` for SEARCH SINCE/BEFORE (day granularity)
  and INTERNALDATE (``date-time``) as the server writes it;
- search keys, built from typed criteria rather than pasted strings.

Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Sequence

from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

# RFC 3501 "date" and "date-time"; month names are English whatever the locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ImapSyntaxError(ValueError):
    """Text from the server that is not what RFC 3501 says it is."""


def quote(text: str) -> str:
    """An IMAP quoted string: ``"`` and ``\\`` escaped.  CR and LF cannot be
    quoted at all: a caller must have refused them before (ValueError)."""
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError("CR, LF and NUL cannot be sent in an IMAP string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_mailbox(name: str) -> str:
    """A mailbox name in modified UTF-7 (RFC 3501 5.1.3): printable ASCII as
    is (``&`` as ``&-``), every other run as ``&`` base64 of UTF-16BE ``-``,
    with ``,`` for ``/``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mailbox(wire: str) -> str:
    """The inverse of :func:`encode_mailbox`, for names the server sends
    (LIST).  ImapSyntaxError when the text is not modified UTF-7."""
    out: list[str] = []
    position = 0
    while position < len(wire):
        start = wire.find("&", position)
        if start < 0:
            out.append(wire[position:])
            break
        out.append(wire[position:start])
        end = wire.find("-", start)
        if end < 0:
            raise ImapSyntaxError(f"unterminated modified UTF-7 in mailbox name {wire!r}")
        chunk = wire[start + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                raise ImapSyntaxError(f"invalid modified UTF-7 in mailbox name {wire!r}") from None
        position = end + 1
    return "".join(out)


def quote_mailbox(name: str) -> str:
    """A mailbox name as it goes on a command line: encoded, then quoted."""
    return quote(encode_mailbox(name))


def search_date(moment: datetime.datetime) -> str:
    """RFC 3501 ``date`` for SEARCH SINCE/BEFORE: ``2-Dec-2026`` style, in
    the moment's own time zone (servers compare in theirs: a day's slack)."""
    return f"{moment.day:02d}-{_MONTHS[moment.month - 1]}-{moment.year:04d}"


def parse_internaldate(text: str) -> datetime.datetime:
    """INTERNALDATE ``"02-Dec-2026 03:04:05 +0000"`` (day may be space-padded)
    -> an aware datetime; ImapSyntaxError for anything else."""
    parts = text.strip().split()
    try:
        day, month_name, year = parts[0].split("-")
        hour, minute, second = (int(part) for part in parts[1].split(":"))
        zone = parts[2]
        month = _MONTHS.index(month_name.capitalize()) + 1
        sign = -1 if zone[0] == "-" else 1
        if zone[0] not in "+-" or len(zone) != 5 or not zone[1:].isdigit():
            raise ValueError(zone)
        offset = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        return datetime.datetime(
            int(year), month, int(day), hour, minute, second, tzinfo=datetime.timezone(offset)
        )
    except (ValueError, IndexError, OverflowError):
        raise ImapSyntaxError(f"INTERNALDATE does not parse: {text[:60]!r}") from None


class SearchKeys:
    """UID SEARCH keys, built from typed parts: every string quoted, every
    date in RFC 3501 form.  ``keys`` is the argument list for imaplib."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def uids_from(self, first_uid: int) -> SearchKeys:
        self.keys += ["UID", f"{first_uid}:*"]
        return self

    def since(self, moment: datetime.datetime) -> SearchKeys:
        self.keys += ["SINCE", search_date(moment)]
        return self

    def before(self, moment: datetime.datetime) -> SearchKeys:
        self.keys += ["BEFORE", search_date(moment)]
        return self

    def text(self, word: str) -> SearchKeys:
        self.keys += ["TEXT", quote(word)]
        return self

    def subject(self, word: str) -> SearchKeys:
        self.keys += ["SUBJECT", quote(word)]
        return self

    def sender(self, word: str) -> SearchKeys:
        self.keys += ["FROM", quote(word)]
        return self

    def header(self, name: str, value: str) -> SearchKeys:
        self.keys += ["HEADER", quote(name), quote(value)]
        return self

    def any_subject(self, words: Sequence[str]) -> SearchKeys:
        """SUBJECT w1 OR SUBJECT w2 ...: RFC 3501's OR takes two keys, so n
        words are n-1 nested ORs in prefix form."""
        return self._any("SUBJECT", words)

    def any_text(self, words: Sequence[str]) -> SearchKeys:
        """TEXT w1 OR TEXT w2 ...: header or body (a bounce quotes the probe)."""
        return self._any("TEXT", words)

    def _any(self, key: str, words: Sequence[str]) -> SearchKeys:
        if not words:
            raise ValueError(f"{key} needs at least one word")
        keys = [key, quote(words[0])]
        for word in words[1:]:
            keys = ["OR", *keys, key, quote(word)]
        self.keys += keys
        return self


class FetchResponse(Record):
    """One untagged FETCH response: its items as text (every part outside
    literals, in order) and its first literal."""

    text: bytes
    literal: bytes | None

    @property
    def uid(self) -> int | None:
        match = re.search(rb"\bUID (\d+)", self.text)
        return int(match.group(1)) if match else None

    @property
    def internaldate(self) -> str | None:
        match = re.search(rb'\bINTERNALDATE "([^"]+)"', self.text)
        return match.group(1).decode("ascii", "replace") if match else None


def fetch_responses(data: Sequence[Any]) -> list[FetchResponse]:
    """imaplib's FETCH data as responses, whatever the order of the items: a
    server may send UID after a literal (Exchange does), which imaplib hands
    over as a separate piece after the (text, literal) pair."""
    responses: list[tuple[list[bytes], bytes | None]] = []
    for part in data:
        head, literal = (part[0], part[1]) if isinstance(part, tuple) and len(part) == 2 else (part, None)
        if not isinstance(head, bytes):
            continue
        if _RESPONSE_START.match(head) or not responses:
            responses.append(([head], literal if isinstance(literal, bytes) else None))
        else:  # what follows a literal belongs to the response before it
            texts, first = responses[-1]
            texts.append(head)
            if first is None and isinstance(literal, bytes):
                responses[-1] = (texts, literal)
    return [FetchResponse(b" ".join(texts), literal) for texts, literal in responses]


_RESPONSE_START = re.compile(rb"^\d+ \(")
