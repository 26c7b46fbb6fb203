"""Small pure helpers of the protocol code."""

import pytest

from check_email_roundtrip.errors import Phase, ProbeError
from check_email_roundtrip.imapsyntax import quote_mailbox
from check_email_roundtrip.net import resolve, wire_name
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
    error = ProbeError(
        Phase.SMTP_RCPT, "rejected", 550, "5.1.1 <x@example.test>:\r\n Recipient address rejected"
    )
    assert str(error) == "SMTP RCPT TO rejected: 550 5.1.1 <x@example.test>: Recipient address rejected"
    assert (error.phase, error.code) == (Phase.SMTP_RCPT, 550)


def test_probe_message_carries_marker_and_uses_crlf(monkeypatch):
    import email

    from check_email_roundtrip.marker import new_marker
    from check_email_roundtrip.message import build_message

    marker = new_marker()
    raw = build_message("probe@example.test", "inbox@example.test", marker)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF, no bare CR
    message = email.message_from_bytes(raw)
    assert marker in message["Subject"] and marker in message.get_payload()
    assert (message["From"], message["To"]) == ("probe@example.test", "inbox@example.test")
    assert message["Message-ID"].endswith("@example.test>")


def test_postfix_dsn_is_read():
    import pathlib

    from check_email_roundtrip.dsn import parse_dsn

    raw = (pathlib.Path(__file__).parent / "headers" / "postfix_dsn.eml").read_bytes()
    bounce = parse_dsn(raw)
    assert bounce.failed and bounce.status == "5.1.1" and bounce.recipient == "nobody@example.test"
    assert bounce.diagnostic.startswith(
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Subject: hello\r\n\r\nnot a report\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n--x--\r\n",
        b"Content-Type: multipart/report; boundary=\r\n\r\ngarbage",
    ],
)
def test_not_a_dsn_or_a_broken_one_is_none(raw):
    from check_email_roundtrip.dsn import parse_dsn

    assert parse_dsn(raw) is None


def test_delayed_dsn_is_not_a_failure():
    from check_email_roundtrip.dsn import parse_dsn

    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n--b--\r\n"
    )
    bounce = parse_dsn(raw)
    assert bounce.action == "delayed" and not bounce.failed and bounce.status == "4.4.1"


@pytest.mark.parametrize(
    "reason, message, name",
    [
        # Python 3.11.7 names it; Debian's 3.11.2 leaves reason unset ("SSL") for the same error
        (
            "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED",
            "[SSL: LEGACY...] legacy sigalg disallowed or unsupported",
            "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED",
        ),
        (
            None,
            "[SSL] legacy sigalg disallowed or unsupported (_ssl.c:992)",
            "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED",
        ),
        ("SSL", "[SSL] wrong version number (_ssl.c:1006)", "WRONG_VERSION_NUMBER"),
        (
            "WRONG_VERSION_NUMBER",
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
            "WRONG_VERSION_NUMBER",
        ),
    ],
)
def test_openssl_reasons_are_named_whatever_python_build_raised_them(reason, message, name):
    import ssl

    from check_email_roundtrip.net import ssl_reason

    error = ssl.SSLError(1, message)
    error.reason = reason
    assert ssl_reason(error) == name


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "mail.example.test",
        "MX.Example.Test.",
        "127.0.0.1",
        "::1",
        "fe80::1%eth0",
        "a" * 63 + ".test",
    ],
)
def test_an_ascii_host_name_goes_out_as_the_idna_codec_would_send_it(host):
    # the resolver and ssl get these bytes instead of the str they would
    # IDNA-encode (loading the codec costs every run 1.5-2 ms)
    assert wire_name(host) == host.encode("idna")


@pytest.mark.parametrize("host", ["bücher.example", "a..b", "a" * 64 + ".test", "."])
def test_a_name_the_codec_must_judge_is_left_to_it(host):
    assert wire_name(host) == host


def test_an_empty_label_is_an_invalid_host_name_not_a_traceback():
    with pytest.raises(ProbeError, match=r"SMTP connect failed: invalid host name 'a\.\.b'"):
        resolve("a..b", 25, 1.0, Phase.SMTP_CONNECT)


def test_the_sample_header_warms_up_the_verdicts_it_resembles():
    # what the wait's first pause parses must be a header authres reads in
    # full, else the first real one pays the compile cost again
    from check_email_roundtrip.verdicts import _SAMPLE_HEADER, read_verdicts

    verdicts = read_verdicts(_SAMPLE_HEADER)
    assert verdicts.malformed is None and not verdicts.ignored
    assert {m: v.result for m, v in verdicts.verdicts.items() if m != "arc"} == dict.fromkeys(
        ("spf", "dkim", "dmarc"), "pass"
    )
    assert verdicts.sender_ip == "192.0.2.1"
