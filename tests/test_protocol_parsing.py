"""Small pure helpers of the protocol code."""

import pytest

from check_email_roundtrip.errors import Phase, ProbeError
from check_email_roundtrip.imap import quote_mailbox
from check_email_roundtrip.smtp import parse_queue_id


@pytest.mark.parametrize(
    "reply, queue_id",
    [
        ("250 2.0.0 Ok: queued as 4Xk3bT0Lz8z9sN", "4Xk3bT0Lz8z9sN"),
        ("250 OK id=1rBcDe-000123-AB", "1rBcDe-000123-AB"),
        ("250 2.0.0 <4f0a@mx> Queued mail for delivery", None),
        ("250 Ok", None),
    ],
)
def test_parse_queue_id(reply, queue_id):
    assert parse_queue_id(reply) == queue_id


@pytest.mark.parametrize(
    "name, quoted",
    [
        ("INBOX", '"INBOX"'),
        ("Sent Items", '"Sent Items"'),
        ('odd"name\\', '"odd\\"name\\\\"'),
        ("R&D", '"R&-D"'),
        ("Entwürfe", '"Entw&APw-rfe"'),  # RFC 3501 modified UTF-7
    ],
)
def test_quote_mailbox(name, quoted):
    assert quote_mailbox(name) == quoted


def test_probe_error_is_one_line_with_phase_code_and_text():
    error = ProbeError(Phase.SMTP_RCPT, "rejected", 550, "5.1.1 <x@example.test>:\r\n Recipient address rejected")
    assert str(error) == "SMTP RCPT TO rejected: 550 5.1.1 <x@example.test>: Recipient address rejected"
    assert (error.phase, error.code) == (Phase.SMTP_RCPT, 550)
