"""Delivery status notifications (RFC 3464): is this message a bounce, of what?

Knows nothing of Nagios.  ``parse_dsn`` reads a multipart/report message and
returns the first recipient's :class:`Bounce`, or None when the message is
not a DSN.  Parsing is the standard library's ``email`` package, through
``message.parse_message``.
"""

from __future__ import annotations

import email.message

from .message import parse_message
from .record import Record


class Bounce(Record):
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # "5.1.1"
    diagnostic: str  # the remote server's reply, "550 5.1.1 <x>: ... User unknown"
    recipient: str

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    def describe(self) -> str:
        text = self.diagnostic or f"status {self.status}"
        return f"{text} (status {self.status}, {self.recipient})" if self.recipient else text


def parse_dsn(raw: bytes) -> Bounce | None:
    try:
        message = parse_message(raw)
    except Exception:  # the email package copes with almost anything; be sure
        return None
    if message.get_content_type() != "multipart/report":
        return None
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            return None
        for block in blocks[1:] or blocks:  # the first block is per message
            if not isinstance(block, email.message.Message):
                continue
            action = str(block.get("Action", "")).strip().lower()
            if not action:
                continue
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
            if ";" in diagnostic:
                diagnostic = diagnostic.split(";", 1)[1].strip()  # drop "smtp;"
            recipient = " ".join(
                str(block.get("Final-Recipient", block.get("Original-Recipient", ""))).split()
            )
            if ";" in recipient:
                recipient = recipient.split(";", 1)[1].strip()  # drop "rfc822;"
            return Bounce(action, str(block.get("Status", "")).strip(), diagnostic, recipient)
    return None
