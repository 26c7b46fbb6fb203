"""Messages: the probe we send, and reading the headers of what we find.

``build_message`` makes the probe; ``parse_header`` is the one place where a
header block fetched over IMAP becomes a message object (the verdicts, the
DNS checks and the classification below all read headers through it), and
``parse_message`` the one for a whole message (a bounce);
``classify`` tells this run's probe from a bounce quoting it.  The email
package is imported when first needed: a run that fails before DATA never
loads it.
"""

from __future__ import annotations

import enum
import socket
from datetime import datetime, timezone

from . import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from collections.abc import Collection
    from email.message import Message

# The header that carries the marker, besides Subject and body.
MARKER_HEADER = "X-Check-Email-Roundtrip"


class Kind(enum.Enum):
    """What a message that quotes the marker is."""

    PROBE = "probe"  # this run's message
    BOUNCE = "bounce"  # a delivery status notification quoting it
    OTHER = "other"  # a forward or a reply quoting the marker: not ours to judge


def build_message(envelope_from: str, recipient: str, marker: str) -> bytes:
    """The probe message, with CRLF line ends as SMTP requires (bare LF is
    refused by servers hardened against SMTP smuggling).

    All ASCII (the rule): the email package's compat32 Message, which smtplib
    has loaded already; the modern policy (email.policy, its header registry
    and parser) would cost every run 6 ms of start-up for the same bytes.
    Addresses or a host name beyond ASCII: EmailMessage with SMTPUTF8."""
    from email.utils import format_datetime, make_msgid

    body = (
        "This message was sent by check_email_roundtrip "
        f"{__version__} to prove that mail is delivered.\n"
        f"Marker: {marker}\n"
        f"Sent by: {socket.gethostname()}\n"
        "It can be deleted.\n"
    )
    domain = envelope_from.rpartition("@")[2] or None
    headers = (
        ("From", envelope_from),
        ("To", recipient),
        ("Subject", f"check_email_roundtrip probe {marker}"),
        ("Date", format_datetime(datetime.now(timezone.utc))),
        ("Message-ID", make_msgid(idstring=marker, domain=domain)),
        (MARKER_HEADER, marker),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no auto-replies to probes
    )
    if all(value.isascii() for _, value in headers) and body.isascii():
        from email.message import Message

        plain = Message()  # compat32
        for name, value in headers:
            plain[name] = value
        plain.set_payload(body, "us-ascii")
        # no folding below RFC 5322's hard limit: the Message-ID stays on its line
        return plain.as_bytes(policy=plain.policy.clone(linesep="\r\n", max_line_length=998))
    import email.policy
    from email.message import EmailMessage

    message = EmailMessage()
    for name, value in headers:
        message[name] = value
    message.set_content(body)
    return message.as_bytes(policy=email.policy.SMTPUTF8)


def parse_header(block: bytes) -> Message:
    """A header block (or a whole message) as the email package's Message,
    leniently (compat32: nothing a sender writes makes it raise)."""
    import email.parser

    return email.parser.BytesHeaderParser().parsebytes(block)  # compat32 is its default


def parse_message(raw: bytes) -> Message:
    """A whole message (a bounce, to read its delivery status), leniently."""
    import email.parser

    return email.parser.BytesParser().parsebytes(raw)  # compat32 is its default


def unfold(value: object) -> str:
    """A header value on one line, whitespace runs made one space."""
    return " ".join(str(value).split())


def header_fields(message: Message, names: Collection[str]) -> list[tuple[str, str]]:
    """(lowercase name, value) of every header whose name is in ``names``, top
    to bottom, each value unfolded and its 8-bit text read as UTF-8 (RFC 6532;
    what is not UTF-8 becomes U+FFFD).  ``get_all`` would hand 8-bit values
    over as U+FFFD throughout (compat32 does not know the charset)."""
    wanted = {name.lower() for name in names}
    fields = []
    for key, value in message.raw_items():
        if key.lower() in wanted:
            if isinstance(value, str):  # 8-bit bytes arrive as surrogate escapes
                value = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
            fields.append((key.lower(), unfold(value)))
    return fields


def header_values(message: Message, name: str) -> list[str]:
    """Every value of header ``name``, as :func:`header_fields` reads them."""
    return [value for _, value in header_fields(message, (name,))]


def classify(header: bytes, marker: str) -> Kind:
    message = parse_header(header)
    if unfold(message.get(MARKER_HEADER, "")) == marker or marker in str(message.get("Subject", "")):
        return Kind.PROBE
    if str(message.get("Content-Type", "")).lower().startswith("multipart/report"):
        return Kind.BOUNCE
    return Kind.OTHER
