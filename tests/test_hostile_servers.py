"""Hardening against hostile servers, as a fault matrix: servers that never
stop talking, that announce absurd literals, that stall after QUIT, that
answer out of step.  Every run ends within -t plus at most 1 s, with a state
and a line in the user's terms, never a bare Python error; where a server
sends without end, the client's own limit is named and the plugin's peak
memory stays under 100 MiB.
"""

import re
import smtplib

import pytest
from conftest import assert_state, run_plugin
from fakes import ImapFake, Mailbox, SmtpFake, fake_args, password_file, run_measured
from mailstack import IMAPS_PORT, MX_PORT

T = 3  # -t of every run here
# -t of a flood too: the client stops at 50,000 lines (about 0.4 s of CPU
# for imaplib), long before -t
T_FLOOD = T
PEAK_MIB = 100


@pytest.fixture
def password(tmp_path):
    return password_file(tmp_path)


def _ends_in_time(run, limit=T):
    assert run.seconds < limit + 1, run.describe()
    assert "Traceback" not in run.stdout and "Error:" not in run.first_line, run.describe()


# -- untagged lines without end: SELECT, SEARCH, LOGOUT ---------------------------------------------
def _untagged_forever(how):
    def handler(peer, tag, args):
        if how == "drip":
            peer.drip(b"* 1 EXISTS\r\n", every=0.05)  # one line every 50 ms
        else:
            peer.flood(b"* 1 EXISTS\r\n")

    return handler


@pytest.mark.parametrize("how", ["drip", "flood"])
@pytest.mark.parametrize("command", ["select", "search", "logout"])
def test_untagged_lines_without_end_keep_no_run_alive(password, command, how):
    box = Mailbox()
    limit = T if how == "drip" else T_FLOOD
    with SmtpFake(box) as smtp, ImapFake(box, **{command: _untagged_forever(how)}) as imap:
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(limit)))
    _ends_in_time(run, limit)
    where = f"127.0.0.1:{imap.port}"
    if command == "logout":  # the message was found before: a goodbye that never ends changes nothing
        assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
        return
    phase = {"select": "IMAP SELECT", "search": "IMAP SEARCH"}[command]
    cause = (
        r"did not end within \d\.\d s" if how == "drip" else r"exceeded the client's limit of 50000 lines"
    )
    assert_state(run, 2, "CRITICAL", f"{phase} to {where} failed: the reply from {where} ")
    assert re.search(cause, run.first_line), run.describe()


# -- replies that never end, literals nobody needs: the client's limit, little memory ----------------
def _flood(data):
    def step(peer, *_):
        peer.flood(data)

    return step


def _literal(size):
    def handler(peer, tag, args):
        uid = args.split()[0]
        peer.send(f"* 1 FETCH (UID {uid} BODY[HEADER] {{{size}}}\r\n".encode())
        peer.flood(b"X" * 4096)

    return handler


SMTP_FLOODS = {
    "SMTP greeting of endless lines": (dict(greeting=_flood(b"220-hello " + b"x" * 60 + b"\r\n")), "connect"),
    "SMTP greeting one endless line": (dict(greeting=_flood(b"220 " + b"x" * 1000)), "connect"),
    "SMTP EHLO reply that never ends": (dict(ehlo=_flood(b"250-EXTENSION " + b"y" * 50 + b"\r\n")), "EHLO"),
}
IMAP_FLOODS = {
    "IMAP greeting of endless lines": (dict(greeting=_flood(b"* OK still greeting\r\n")), "connect"),
    "IMAP greeting one endless line": (dict(greeting=_flood(b"* OK " + b"z" * 1000)), "connect"),
    "IMAP LOGIN answered without end": (dict(login=_flood(b"* NO not yet\r\n")), "LOGIN"),
    "FETCH literal {999999999}": (dict(fetch=_literal(999999999)), "FETCH"),
    "FETCH literal {99999999999}": (dict(fetch=_literal(99999999999)), "FETCH"),
}
LIMIT = {
    "SMTP greeting of endless lines": "the reply from {w} exceeded the client's limit of 65536 bytes",
    "SMTP greeting one endless line": "a reply line from {w} exceeded the client's limit of 8192 bytes",
    "SMTP EHLO reply that never ends": "the reply from {w} exceeded the client's limit of 65536 bytes",
    "IMAP greeting of endless lines": "the reply from {w} exceeded the client's limit of 50000 lines",
    "IMAP greeting one endless line": "a reply line from {w} exceeded the client's limit of 1048576 bytes",
    "IMAP LOGIN answered without end": "the reply from {w} exceeded the client's limit of 50000 lines",
    "FETCH literal {999999999}": (
        "a literal of 999999999 bytes announced by {w} exceeded the client's limit of 4194304 bytes"
    ),
    "FETCH literal {99999999999}": (
        "a literal of 99999999999 bytes announced by {w} exceeded the client's limit of 4194304 bytes"
    ),
}


@pytest.mark.parametrize("case", [*SMTP_FLOODS, *IMAP_FLOODS])
def test_a_server_that_sends_without_end_meets_the_clients_limit(password, case):
    box = Mailbox()
    if case in SMTP_FLOODS:
        steps, phase = SMTP_FLOODS[case]
        smtp, imap = SmtpFake(box, **steps), None
        server, extra = smtp, ("--mode", "submit")
    else:
        handlers, phase = IMAP_FLOODS[case]
        smtp, imap = SmtpFake(box), ImapFake(box, **handlers)
        server, extra = imap, ()
    try:
        run, peak = run_measured(*fake_args(smtp, imap, password, "-t", str(T_FLOOD), *extra))
    finally:
        for fake in (smtp, imap):
            if fake is not None:
                fake.close()
    where = f"127.0.0.1:{server.port}"
    protocol = "SMTP" if case in SMTP_FLOODS else "IMAP"
    assert_state(run, 2, "CRITICAL", f"{protocol} {phase} to {where} failed: " + LIMIT[case].format(w=where))
    _ends_in_time(run, T_FLOOD)
    assert peak < PEAK_MIB, f"{case}: peak RSS {peak:.1f} MiB\n{run.describe()}"
    print(f"{case}: {run.seconds:.2f} s, peak RSS {peak:.1f} MiB: {run.first_line}")


# -- a server that stalls after QUIT, in front of the real stack --------------------------------------
def _relay_to_the_stack(peer, raw):
    """Hand the message to the stack's inbound MX, then say 250 for it."""
    with smtplib.SMTP("127.0.0.1", MX_PORT, timeout=10) as relay:
        relay.sendmail("probe@example.test", ["probe@example.test"], raw)
    return peer.send(b"250 2.0.0 Ok: queued as RELAYED\r\n")


def test_smtp_quit_that_is_never_answered_is_not_part_of_the_round_trip(stack):
    with SmtpFake(message=_relay_to_the_stack, quit=lambda peer: peer.stall()) as smtp:
        run = run_plugin(
            "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port), "--smtp-security", "none",
            "--from", "probe@example.test",
            "--imap-host", "localhost", "--imap-port", str(IMAPS_PORT), "--ca-file", stack.ca,
            "--imap-user", stack.address("probe"), "--imap-password-file", stack.password_file("probe"),
            "--auth-policy", "dkim=ok", "-t", "10",  # relayed to the MX directly: nobody signed it
        )  # fmt: skip
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert run.perfdata["roundtrip"] < 2, run.describe()
    # QUIT never answered: the session's total ends with the reply to the message
    assert run.perfdata["smtp_total"] < 1, run.describe()
    assert run.seconds < 5, run.describe()  # at most 2 s of waiting for the goodbye
    assert any(line.upper().startswith(b"QUIT") for line in smtp.received)


def test_submit_mode_against_a_server_that_stalls_after_quit(password):
    with SmtpFake(quit=lambda peer: peer.stall()) as smtp:
        run = run_plugin(*fake_args(smtp, None, password, "--mode", "submit", "-t", str(T)))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - submitted in 0.0")
    assert run.perfdata["smtp_total"] < 1, run.describe()
    _ends_in_time(run)


# -- replies out of step, and our own limits said as ours ---------------------------------------------
def test_an_overlong_reply_line_is_the_clients_limit_not_a_500(password):
    with SmtpFake(greeting=b"220 " + b"w" * 10000 + b"\r\n") as smtp:
        run = run_plugin(*fake_args(smtp, None, password, "--mode", "submit", "-t", str(T)))
    where = f"127.0.0.1:{smtp.port}"
    limit = "exceeded the client's limit of 8192 bytes"
    assert_state(run, 2, "CRITICAL", f"SMTP connect to {where} failed: a reply line from {where} {limit}")
    assert "500" not in run.first_line and "Line too long" not in run.stdout
    _ends_in_time(run)


def test_250_to_data_before_any_data_is_out_of_step(password):
    with SmtpFake(data=b"250 2.0.0 Ok already\r\n") as smtp:
        run = run_plugin(*fake_args(smtp, None, password, "--mode", "submit", "-t", str(T)))
    assert_state(
        run,
        2,
        "CRITICAL",
        "SMTP DATA failed: out of step: answered 250 where 354 was expected: 2.0.0 Ok already",
    )
    assert "rejected" not in run.first_line
    _ends_in_time(run)


def test_an_auth_reply_that_is_not_an_smtp_reply_shows_no_code(tmp_path):
    password = password_file(tmp_path, "auth-secret-1")
    with SmtpFake(auth=b"hello, this is not SMTP\r\n") as smtp:
        args = fake_args(smtp, None, password, "--mode", "submit", "-t", str(T))
        run = run_plugin(*args, "--smtp-user", "probe@example.test", "--smtp-password-file", password)
    assert_state(
        run,
        2,
        "CRITICAL",
        "SMTP AUTH failed: out of step: answered something that is not an SMTP reply where 235 was expected",
    )
    assert "-1" not in run.first_line
    _ends_in_time(run)


@pytest.mark.parametrize("reply", [b"199 what\r\n", b"601 beyond\r\n"])
def test_a_reply_code_outside_smtp_at_mail_from_is_out_of_step(password, reply):
    with SmtpFake(mail=reply) as smtp:
        run = run_plugin(*fake_args(smtp, None, password, "--mode", "submit", "-t", str(T)))
    code = reply.split()[0].decode()
    assert_state(
        run, 2, "CRITICAL", f"SMTP MAIL FROM failed: out of step: answered {code} where 250 was expected"
    )
    _ends_in_time(run)
