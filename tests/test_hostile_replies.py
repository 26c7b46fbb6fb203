"""What a server says, taken as it is: localised folder names, FETCH items in
Exchange's order, replies that echo secrets, malformed values, control
characters.  Each row a run against the fakes of fakes.py: a state and one
printable line 1 in the user's terms, never a bare Python error.
"""

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import STATUS_LINE, assert_state, run_plugin
from fakes import ImapFake, Mailbox, SmtpFake, b64, fake_args, marker_of, password_file, probe_message

from check_email_roundtrip.imapsyntax import FetchResponse, fetch_responses

T = 5


@pytest.fixture
def password(tmp_path):
    return password_file(tmp_path)


def _one_printable_first_line(run):
    assert STATUS_LINE.match(run.first_line), run.describe()
    assert run.first_line.isprintable(), repr(run.first_line)
    assert sum(line.startswith("EMAIL_ROUNDTRIP") for line in run.lines) == 1, run.describe()
    assert "Traceback" not in run.stdout and run.stderr == "", run.describe()
    assert run.seconds < T + 1, run.describe()


# -- a localised Junk folder ------------------------------------------------------------------------
JUNK = "Courrier ind&AOk-sirable"  # "Courrier indésirable" in modified UTF-7
LIST = (b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren \\Junk) "/" "' + JUNK.encode() + b'"')


@pytest.mark.parametrize("where", ["INBOX", JUNK])
def test_a_localised_junk_folder_is_watched(password, where):
    box = Mailbox(JUNK)
    caps = "IMAP4rev1 UIDPLUS SPECIAL-USE"
    with SmtpFake(box, folder=where) as smtp, ImapFake(box, caps, list_lines=LIST) as imap:
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T), "-v"))
    _one_printable_first_line(run)
    assert "junk folder Courrier indésirable, UIDNEXT 1" in run.stdout, run.describe()
    if where == "INBOX":
        assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
        assert "STATUS" in imap.commands  # asked each round, never refused
    else:
        assert_state(run, 1, "WARNING", 'delivered to Junk folder "Courrier indésirable" after ')


# -- FETCH items in any order: UID after the literal (Exchange) --------------------------------------
def test_fetch_responses_with_the_uid_after_the_literal():
    data = [
        (b"1 (BODY[HEADER.FIELDS (SUBJECT)] {20}", b"Subject: probe one\r\n"),
        b" UID 17 FLAGS (\\Seen))",
        (b"2 (UID 18 BODY[HEADER.FIELDS (SUBJECT)] {20}", b"Subject: probe two\r\n"),
        b")",
        b'3 (INTERNALDATE "02-Dec-2026 03:04:05 +0000" UID 19)',
    ]
    responses = fetch_responses(data)
    assert [r.uid for r in responses] == [17, 18, 19]
    assert [r.literal for r in responses[:2]] == [b"Subject: probe one\r\n", b"Subject: probe two\r\n"]
    assert responses[2].internaldate == "02-Dec-2026 03:04:05 +0000" and responses[2].literal is None
    assert fetch_responses([]) == [] and isinstance(responses[0], FetchResponse)


def test_late_probe_and_purge_against_a_server_sending_uid_after_the_literal(password, tmp_path):
    box = Mailbox()
    late_marker = "emailrtprobe" + "a" * 24
    sent_at = time.time() - 120
    box.deliver(probe_message(late_marker), internaldate=datetime.now(timezone.utc) - timedelta(seconds=60))
    old = box.deliver(
        probe_message("emailrtprobe" + "b" * 24), internaldate=datetime(2020, 1, 2, tzinfo=timezone.utc)
    )
    keep = box.deliver(
        b"Subject: about emailrtprobe, not one\r\n\r\nx\r\n",
        internaldate=datetime(2020, 1, 2, tzinfo=timezone.utc),
    )
    state = tmp_path / "state.json"
    pending = [{"marker": late_marker, "sent_at": sent_at, "queue_id": "LATE1"}]
    state.write_text(json.dumps({"format": "check_email_roundtrip state", "version": 2, "pending": pending}))
    with SmtpFake(box) as smtp, ImapFake(box, uid_after_literal=True) as imap:
        args = fake_args(smtp, imap, password, "-t", str(T), "--state-file", str(state))
        run = run_plugin(*args, "--purge-older-than", "30", "-v")
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    late = [line for line in run.lines if "(queued as LATE1) arrived late, after " in line]
    assert late and 55 <= int(re.search(r"after (\d+) s", late[0]).group(1)) <= 65, run.stdout
    assert run.perfdata["late"] == 1 and json.loads(state.read_text())["pending"] == []
    assert box.expunged == [old] and keep not in box.expunged, run.stdout  # the probe only
    _one_printable_first_line(run)


# -- secrets echoed back -----------------------------------------------------------------------------
def _echo_imap_login(peer, tag, args):
    peer.send(f"{tag} NO [AUTHENTICATIONFAILED] LOGIN {args} refused\r\n".encode())
    return True


@pytest.mark.parametrize("secret", ['ab"c\\d', "a  b   c-pass", "Tab\tbed Word"])
def test_an_imap_server_echoing_the_login_has_it_masked(tmp_path, secret):
    password = password_file(tmp_path, secret)
    with ImapFake(Mailbox(), login=_echo_imap_login) as imap:
        run = run_plugin(*fake_args(None, imap, password, "--mode", "poll", "--subject", "x", "-vvv"))
    assert_state(
        run, 2, "CRITICAL", "IMAP LOGIN rejected for probe@example.test: [AUTHENTICATIONFAILED] LOGIN "
    )
    quoted = '"' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"'
    for form in (secret, quoted, " ".join(secret.split()), quoted[1:-1]):
        assert form not in run.stdout, f"{form!r} in {run.stdout}"
    assert "********" in run.first_line


def test_an_smtp_server_echoing_a_password_with_runs_of_spaces_has_it_masked(tmp_path):
    secret = "open   sesame  now"
    password = password_file(tmp_path, secret)

    def echo(peer, line):
        return peer.send(b"535 5.7.8 no: " + line.strip() + b" means open sesame now\r\n")

    with SmtpFake(ehlo=b"250-fake\r\n250 AUTH PLAIN\r\n", auth=echo) as smtp:
        args = fake_args(smtp, None, password, "--mode", "submit", "-vvv")
        run = run_plugin(*args, "--smtp-user", "probe@example.test", "--smtp-password-file", password)
    assert_state(run, 2, "CRITICAL", "SMTP AUTH rejected: 535 5.7.8 no: AUTH PLAIN ******** means ********")
    for form in (secret, "open sesame now", b64(f"\0probe@example.test\0{secret}")):
        assert form not in run.stdout


@pytest.mark.parametrize("secret", ["OK", "0"])
def test_a_password_that_is_a_common_word_masks_no_word_of_ours(tmp_path, secret):
    password = password_file(tmp_path, secret)
    box = Mailbox()
    with SmtpFake(box) as smtp, ImapFake(box) as imap:
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T), "-v"))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip 0.")
    assert "SMTP accepted: 250 2.0.0 Ok: queued as FAKE1234" in run.lines, run.stdout
    assert re.search(r"late=0c;;;0 lost=0c;;;0 roundtrip=0\.\d+s;60;300;0", run.stdout), run.stdout


# -- malformed values: a state and a line, never a Python error -----------------------------------
def test_uidnext_that_is_not_a_number(password):
    with SmtpFake() as smtp, ImapFake(Mailbox(), uidnext_text="abc") as imap:
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T)))
    assert_state(run, 2, "CRITICAL", 'IMAP SELECT failed: UIDNEXT of folder "INBOX" is not a number: abc')
    _one_printable_first_line(run)


def test_malformed_internaldate_in_poll_mode(password):
    box = Mailbox()
    box.deliver(b"Subject: Backup report\r\n\r\nok\r\n")
    with ImapFake(box, internaldate_text="32-Foo-2026 25:61:00 +99") as imap:
        run = run_plugin(
            *fake_args(None, imap, password, "--mode", "poll", "--subject", "Backup", "-t", str(T))
        )
    assert_state(
        run, 2, "CRITICAL", "IMAP FETCH failed: INTERNALDATE does not parse: '32-Foo-2026 25:61:00 +99'"
    )
    _one_printable_first_line(run)


def _login_disallowed(peer, tag, args):
    peer.send(f"{tag} NO LOGIN not for you\r\n".encode())
    return True


@pytest.mark.parametrize(
    "user, secret", [("probe@example.test", "pässwört€"), ("prüfer@exämple.test", "secret")]
)
def test_non_ascii_imap_login_goes_as_authenticate_plain(tmp_path, user, secret):
    password = password_file(tmp_path, secret)
    box = Mailbox()
    with SmtpFake(box) as smtp, ImapFake(box, login=_login_disallowed) as imap:
        args = fake_args(smtp, imap, password, "-t", str(T))
        args[args.index("--imap-user") + 1] = user
        run = run_plugin(*args)
    assert_state(run, 0, "OK")
    assert "AUTHENTICATE" in imap.commands and "LOGIN" not in imap.commands
    sent = [line for line in imap.received if line.strip() and not line.split(b" ", 1)[0].isalnum()]
    assert b64(f"\0{user}\0{secret}").encode() + b"\r\n" in imap.received, sent
    # without AUTH=PLAIN: said, and not one character of the password shown
    with SmtpFake() as smtp, ImapFake(Mailbox(), "IMAP4rev1") as imap:
        args = fake_args(smtp, imap, password, "-t", str(T))
        args[args.index("--imap-user") + 1] = user
        run = run_plugin(*args)
    assert_state(
        run, 2, "CRITICAL", "IMAP LOGIN impossible: the user name or password is not ASCII, and the server"
    )
    assert not {char for char in secret if not char.isascii()} & set(run.stdout)


def test_a_bom_in_the_password_file_is_not_part_of_the_password(tmp_path):
    password = tmp_path / "bom"
    password.write_bytes("\ufeffplain-secret\r\n".encode())
    password.chmod(0o600)
    box = Mailbox()
    with SmtpFake(box) as smtp, ImapFake(box) as imap:
        run = run_plugin(*fake_args(smtp, imap, str(password), "-t", str(T)))
    assert_state(run, 0, "OK")
    login = next(line for line in imap.received if b" LOGIN " in line)
    assert login.endswith(b' "probe@example.test" "plain-secret"\r\n'), login


# -- control characters: line 1 stays one printable line -------------------------------------------
def test_control_characters_in_the_queue_id(password):
    box = Mailbox()
    with SmtpFake(box, message=None) as smtp:
        smtp.steps["message"] = lambda peer, raw: (
            smtp.deliver(raw)
            or peer.send(b"250 2.0.0 Ok: queued as \x1b[31mQ\x07ID\x00X \x1b]0;pwned\x07\r\n")
        )
        with ImapFake(box) as imap:
            run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T), "-v"))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    _one_printable_first_line(run)
    assert all(line.isprintable() for line in run.lines), run.stdout
    assert "\\x1b[31mQ\\x07ID\\x00X" in run.first_line


def _bounce_of(raw):
    marker = marker_of(raw)
    return (
        b"From: MAILER-DAEMON@example.test\r\nSubject: Undelivered Mail\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nsorry\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; fake\r\n\r\nFinal-Recipient: rfc822; probe@example.test\r\nAction: failed\r\n"
        b"Status: 5.1.1\rEMAIL_ROUNDTRIP OK - forged\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\nEMAIL_ROUNDTRIP OK - forged too\x1b[2J\x07\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: probe "
        + marker.encode()
        + b"\r\n--b--\r\n"
    )


def test_a_bounce_whose_fields_start_new_lines(password):
    box = Mailbox()

    def bounce(peer, raw):
        box.deliver(_bounce_of(raw))
        return peer.send(b"250 2.0.0 Ok: queued as B1\r\n")

    with SmtpFake(box, message=bounce) as smtp, ImapFake(box) as imap:
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T), "-v"))
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - bounced after ")
    _one_printable_first_line(run)
    assert all(line.isprintable() for line in run.lines), run.stdout


def test_a_junk_folder_name_with_a_bare_cr(password):
    box = Mailbox("Ju&AA0-nk")  # the name as the plugin sends it back: modified UTF-7
    lines = (b'(\\HasNoChildren) "/" INBOX', b'(\\Junk) "/" {5}\r\nJu\rnk')
    with (
        SmtpFake(box, folder="Ju&AA0-nk") as smtp,
        ImapFake(box, "IMAP4rev1 SPECIAL-USE", list_lines=lines) as imap,
    ):
        run = run_plugin(*fake_args(smtp, imap, password, "-t", str(T), "-v"))
    assert_state(run, 1, "WARNING", 'delivered to Junk folder "Ju nk" after ')
    _one_printable_first_line(run)
    assert all(line.isprintable() for line in run.lines), run.stdout
