"""The installed plugin against the real Postfix + Dovecot stack on loopback."""

import base64
import imaplib
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from conftest import assert_state, run_plugin
from mailstack import IMAP_PORT, IMAPS_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT

STARTTLS_LABELS = {
    "roundtrip",
    "smtp_connect",
    "smtp_starttls",
    "smtp_auth",
    "smtp_submit",
    "smtp_total",
    "imap_retrieval",
    "auth_spf",
    "auth_dkim",
    "auth_dmarc",
    "hop_max",  # the found message's Received chain: the MX's hop is the receiver's
    "hops",
    "late",
    "lost",
    "smtp_cert_days",
    "imap_cert_days",
}
IMPLICIT_TLS_LABELS = STARTTLS_LABELS - {"smtp_starttls"}


def _probe_args(stack, user, smtp_port, imap_port, security, extra):
    return [
        "-H",
        "localhost",
        "--ca-file",
        stack.ca,
        "--smtp-port",
        str(smtp_port),
        "--smtp-security",
        security,
        "--imap-port",
        str(imap_port),
        "--imap-security",
        security,
        "--smtp-user",
        stack.address(user),
        "--smtp-password-file",
        stack.password_file(user),
        *extra,
    ]


def starttls_args(stack, user="probe", *extra):
    """587/143-style: STARTTLS on both sides, certificates verified via --ca-file."""
    return _probe_args(stack, user, SUBMISSION_PORT, IMAP_PORT, "starttls", extra)


def implicit_tls_args(stack, user="probe", *extra):
    """465/993-style: implicit TLS on both sides."""
    return _probe_args(stack, user, SUBMISSIONS_PORT, IMAPS_PORT, "tls", extra)


# -- OK paths -------------------------------------------------------------------
def test_round_trip_over_starttls_is_ok_with_every_label(stack):
    run = run_plugin(*starttls_args(stack))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert "(INBOX, queued as " in run.first_line
    assert set(run.perfdata) == STARTTLS_LABELS
    assert 0 < run.perfdata["roundtrip"] < 60
    assert run.stdout.count("|") == 1
    # the stack's certificate, as openssl reads it
    not_after = datetime.strptime(stack.certificates.not_after(stack.tls_cert), "%b %d %H:%M:%S %Y GMT")
    days = (not_after.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)).total_seconds() / 86400
    assert abs(run.perfdata["smtp_cert_days"] - days) < 1 and abs(run.perfdata["imap_cert_days"] - days) < 1


def test_round_trip_over_implicit_tls_is_ok_with_every_label(stack):
    run = run_plugin(*implicit_tls_args(stack))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert set(run.perfdata) == IMPLICIT_TLS_LABELS


def test_perfdata_on_line_one_unless_there_is_long_output(stack):
    run = run_plugin(*implicit_tls_args(stack, "probe", "--mode", "submit"))
    assert_state(run, 0, "OK")
    assert len(run.lines) == 1 and " | " in run.first_line and "smtp_total=" in run.first_line
    # a round trip always has its verdict lines below the status line
    run = run_plugin(*implicit_tls_args(stack))
    assert_state(run, 0, "OK")
    assert [line.split("=")[0] for line in run.lines[1:-1]] == ["spf", "dkim", "dmarc"]
    assert "|" not in run.first_line and run.lines[-1].startswith("| ")
    # two phases over budget: both named below the status line, perfdata last
    run = run_plugin(
        *implicit_tls_args(
            stack, "probe", "--phase-warning", "smtp_connect=0:0", "--phase-warning", "smtp_submit=0:0"
        )
    )
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - smtp_")
    assert "|" not in run.first_line and run.lines[-1].startswith("| ")
    assert any(line.startswith("smtp_connect ") for line in run.lines[1:-1])
    assert any(line.startswith("smtp_submit ") for line in run.lines[1:-1])


def test_submit_only_is_ok(stack):
    run = run_plugin(*starttls_args(stack, "probe", "--mode", "submit"))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - submitted in ")
    assert set(run.perfdata) == {
        "smtp_connect",
        "smtp_starttls",
        "smtp_auth",
        "smtp_submit",
        "smtp_total",
        "smtp_cert_days",
    }


def test_perfdata_carries_thresholds_and_budgets(stack):
    run = run_plugin(*implicit_tls_args(stack, "probe", "-w", "45", "-c", "90"))
    assert_state(run, 0, "OK")
    perf = run.stdout.split("|", 1)[1].split()
    items = {item.split("=")[0]: item for item in perf}
    assert items["roundtrip"].endswith("s;45;90;0")
    assert items["smtp_auth"].endswith("s;1;;0")


def _subject_of(stack, uid):
    context = ssl.create_default_context(cafile=stack.ca)
    with imaplib.IMAP4_SSL("localhost", IMAPS_PORT, ssl_context=context) as imap:
        imap.login(stack.address("probe"), open(stack.password_file("probe")).read().strip())
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return data[0][1].decode()


def test_two_probes_at_once_each_find_their_own_message(stack):
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: run_plugin(*starttls_args(stack, "probe", "-v")), range(2)))
    found = []
    for run in runs:
        assert_state(run, 0, "OK")
        marker = next(line.split()[-1] for line in run.lines if line.startswith("marker "))
        uid = int(next(line.split()[2] for line in run.lines if line.startswith("found UID ")))
        assert marker in _subject_of(stack, uid)
        found.append((marker, uid))
    assert found[0][0] != found[1][0] and found[0][1] != found[1][1]


# -- thresholds and delivery ---------------------------------------------------------
def _release_held_after(stack, seconds):
    """Hold-and-release: a delivery delayed by `seconds` after it was queued."""

    def release():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stack.queue_ids("hold"):
            time.sleep(0.05)
        time.sleep(seconds)
        stack.release_held()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


def test_delayed_delivery_crossing_warning_is_warning(stack, held_queue):
    thread = _release_held_after(stack, 2.0)
    run = run_plugin(*starttls_args(stack, "probe", "--to", "probe+hold@example.test", "-w", "1", "-c", "30"))
    thread.join()
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - roundtrip ")
    assert "(outside range 0:1)" in run.first_line
    assert run.perfdata["roundtrip"] >= 2.0


def test_delayed_delivery_crossing_critical_is_critical(stack, held_queue):
    thread = _release_held_after(stack, 2.0)
    run = run_plugin(
        *starttls_args(
            stack, "probe", "--to", "probe+hold@example.test", "-w", "0.5", "-c", "1", "--wait", "20"
        )
    )
    thread.join()
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - roundtrip ")
    assert run.perfdata["roundtrip"] >= 2.0


def test_message_that_never_arrives_is_critical_within_wait(stack, held_queue):
    run = run_plugin(*implicit_tls_args(stack, "probe", "--to", "probe+hold@example.test", "--wait", "3"))
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - not delivered within 3 s (queued as ")
    assert stack.queue_ids("hold"), "the message should still be held"
    assert 3 <= run.seconds < 3 + 5
    assert "roundtrip" not in run.perfdata and "smtp_submit" in run.perfdata


# -- failures ----------------------------------------------------------------------------
def test_wrong_smtp_password_is_critical_quoting_535(stack, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    args = starttls_args(stack)
    args[args.index("--smtp-password-file") + 1] = str(wrong)
    run = run_plugin(*args, "--imap-password-file", stack.password_file("probe"))
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - SMTP AUTH rejected: 535 5.7.8")
    assert set(run.perfdata) == {
        "smtp_connect",
        "smtp_starttls",
        "late",
        "lost",
        "smtp_cert_days",
        "imap_cert_days",
    }


def test_wrong_imap_password_is_critical(stack, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    run = run_plugin(*implicit_tls_args(stack, "probe", "--imap-password-file", str(wrong)))
    assert_state(
        run,
        2,
        "CRITICAL",
        "EMAIL_ROUNDTRIP CRITICAL - IMAP LOGIN rejected for probe@example.test: [AUTHENTICATIONFAILED]",
    )


def test_port_with_nothing_listening_is_critical(stack, free_port):
    run = run_plugin(*starttls_args(stack, "probe", "--smtp-port", str(free_port)))
    assert_state(run, 2, "CRITICAL", f"SMTP connect to localhost:{free_port} refused")


def test_imap_folder_missing_is_critical_naming_it(stack):
    run = run_plugin(*implicit_tls_args(stack, "probe", "--imap-folder", "No Such Folder"))
    assert_state(run, 2, "CRITICAL", 'IMAP SELECT failed: folder "No Such Folder" cannot be opened')


def test_host_name_that_does_not_resolve_is_critical(stack):
    run = run_plugin(*starttls_args(stack, "probe", "--smtp-host", "no-such-host.invalid"))
    assert_state(run, 2, "CRITICAL", "SMTP connect failed: cannot resolve host name no-such-host.invalid")


def test_certificate_for_another_name_is_critical_and_ok_with_insecure(stack):
    # The stack's certificate names "localhost" only: 127.0.0.1 does not match.
    args = starttls_args(stack) + ["--smtp-host", "127.0.0.1"]
    run = run_plugin(*args)
    assert_state(run, 2, "CRITICAL", "SMTP STARTTLS to 127.0.0.1:")
    assert "certificate is for localhost, not 127.0.0.1" in run.first_line
    run = run_plugin(*args, "--insecure")
    assert_state(run, 0, "OK", "TLS NOT VERIFIED (--insecure)")


def test_imap_certificate_for_another_name_is_critical(stack):
    run = run_plugin(*implicit_tls_args(stack, "probe", "--imap-host", "127.0.0.1"))
    assert_state(run, 2, "CRITICAL", "IMAP TLS handshake to 127.0.0.1:")
    assert "certificate is for localhost, not 127.0.0.1" in run.first_line


def test_untrusted_certificate_is_critical_on_either_server(stack):
    # Without --ca-file the stack's private CA is not in the system store.
    args = implicit_tls_args(stack)
    del args[args.index("--ca-file") : args.index("--ca-file") + 2]
    run = run_plugin(*args, "--mode", "submit")
    assert_state(run, 2, "CRITICAL", "SMTP TLS handshake to localhost:")
    assert "unknown issuer: Mailstack Test CA (use --ca-file?)" in run.first_line
    run = run_plugin(*args)  # roundtrip mode logs in to IMAP first
    assert_state(run, 2, "CRITICAL", "IMAP TLS handshake to localhost:")
    assert "unknown issuer: Mailstack Test CA (use --ca-file?)" in run.first_line


def _scripted_smtp_peer(respond):
    """A loopback SMTP peer for what no real server here will do: it greets,
    answers each line with respond(line) (None hangs up) and records them."""
    received = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"220 scripted ESMTP\r\n")
            for line in conn.makefile("rb"):
                received.append(line)
                reply = respond(line)
                if reply is None:
                    break
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server, received


def test_starttls_not_offered_is_critical_and_sends_no_auth(stack):
    # Postfix here always offers STARTTLS; this peer offers AUTH but no STARTTLS.
    def respond(line):
        if line.upper().startswith(b"EHLO"):
            return b"250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        return None if line.upper().startswith(b"QUIT") else b"250 ok\r\n"

    server, received = _scripted_smtp_peer(respond)
    port = server.getsockname()[1]
    run = run_plugin(
        *starttls_args(
            stack, "probe", "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--mode", "submit"
        )
    )
    server.close()
    assert_state(
        run, 2, "CRITICAL", "SMTP STARTTLS not offered by the server: refusing to continue without TLS"
    )
    assert not any(line.upper().startswith(b"AUTH") for line in received), received


def test_auth_not_offered_before_tls_is_critical(stack):
    # Postfix offers AUTH only after STARTTLS (smtpd_tls_auth_only): with
    # --smtp-security none the probe must say so, not send credentials.
    run = run_plugin(*starttls_args(stack, "probe", "--smtp-security", "none", "--mode", "submit"))
    assert_state(run, 2, "CRITICAL", "SMTP AUTH unavailable: the server offers no AUTH")


# -- time budget -------------------------------------------------------------------------
def _silent_listener(drip=None):
    """Accepts TCP and says nothing (or drips a continuation line forever)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        connections = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                connections.append(conn)
            except OSError:
                pass
            for conn in connections:
                if drip:
                    try:
                        conn.sendall(drip)
                    except OSError:
                        pass
        for conn in connections:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, stop


def test_server_that_never_greets_is_critical_before_t(stack):
    server, stop = _silent_listener()
    try:
        run = run_plugin(
            *starttls_args(
                stack,
                "probe",
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                str(server.getsockname()[1]),
                "--mode",
                "submit",
                "-t",
                "3",
            )
        )
    finally:
        stop.set()
    assert_state(run, 2, "CRITICAL", "SMTP connect to 127.0.0.1:")
    # what was left of -t (counted from the process's start), less 0.5 s
    waited = float(re.search(r"no SMTP greeting within (\d+\.\d) s", run.first_line).group(1))
    assert 2.0 <= waited <= 2.5
    assert run.seconds < 3 + 1


def test_reply_that_never_ends_is_stopped_at_the_step_limit_naming_the_step(stack):
    server, stop = _silent_listener(drip=b"220-still greeting\r\n")
    try:
        run = run_plugin(
            *starttls_args(
                stack,
                "probe",
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                str(server.getsockname()[1]),
                "--mode",
                "submit",
                "--step-timeout",
                "2",
                "-t",
                "20",
            )
        )
    finally:
        stop.set()
    port = server.getsockname()[1]
    assert_state(
        run,
        2,
        "CRITICAL",
        f"SMTP connect to 127.0.0.1:{port} failed: the reply from 127.0.0.1:{port} did not end within 2.0 s",
    )
    assert run.seconds < 2 + 1


def test_t_reached_is_unknown_naming_the_stage(stack):
    # one line that never ends: each byte keeps the read alive, -t stops it
    server, stop = _silent_listener(drip=b"2")
    try:
        run = run_plugin(
            *starttls_args(
                stack,
                "probe",
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                str(server.getsockname()[1]),
                "-t",
                "2",
            )
        )
    finally:
        stop.set()
    assert_state(run, 3, "UNKNOWN", "EMAIL_ROUNDTRIP UNKNOWN - timeout: -t 2 s reached during SMTP connect")
    assert run.seconds < 2 + 1


def test_t_reached_while_smtp_waits_for_the_imap_side_names_the_imap_stage(stack):
    # IMAP signs in beside SMTP; SMTP is ready at once and waits for an IMAP
    # greeting that drips forever: -t names what it was waiting for
    server, stop = _silent_listener(drip=b"*")
    try:
        run = run_plugin(
            *starttls_args(
                stack,
                "probe",
                "--imap-host",
                "127.0.0.1",
                "--imap-port",
                str(server.getsockname()[1]),
                "-t",
                "2",
            ),
            "--imap-security",
            "none",
            "--imap-password-file",
            stack.password_file("probe"),
        )
    finally:
        stop.set()
    assert_state(run, 3, "UNKNOWN", "EMAIL_ROUNDTRIP UNKNOWN - timeout: -t 2 s reached during IMAP ")
    assert "smtp_auth=" in run.stdout  # the SMTP side signed in meanwhile
    assert run.seconds < 2 + 1


def test_the_side_by_side_sign_ins_log_in_protocol_order(stack):
    """IMAP and SMTP sign in at the same time; -v and the -vvv trace still
    read IMAP first (its sign-in and UIDNEXT), then SMTP."""
    run = run_plugin(*starttls_args(stack, "probe", "-vvv"))
    assert_state(run, 0, "OK")
    protocols = [line.split(" ", 1)[0] for line in run.lines if line.startswith(("IMAP ", "SMTP "))]
    first_smtp = protocols.index("SMTP")
    sign_in = protocols[:first_smtp]
    assert len(sign_in) > 5 and set(sign_in) == {"IMAP"}, run.stdout
    # the SMTP lines come as one block up to the goodbye, searches after it
    assert any(line.startswith("IMAP localhost:") and "UIDNEXT" in line for line in run.lines[:200])
    # LOGOUT, said in the background while the found header is read, is
    # still said, answered, and logged last
    imap_lines = [line for line in run.lines if line.startswith("IMAP ")]
    assert imap_lines[-2].endswith(" LOGOUT") and imap_lines[-1].startswith("IMAP < * BYE"), run.stdout


def test_t_shorter_than_wait_ends_in_time_naming_the_wait(stack, held_queue):
    run = run_plugin(
        *implicit_tls_args(stack, "probe", "--to", "probe+hold@example.test", "--wait", "30", "-t", "3")
    )
    assert_state(run, 3, "UNKNOWN", "timeout: -t 3 s reached during waiting for delivery")
    assert run.seconds < 3 + 1


# -- secrets and verbosity --------------------------------------------------------------------
def test_no_password_in_output_even_at_vvv(stack):
    password = open(stack.password_file("probe")).read().strip()
    user = stack.address("probe")
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    run = run_plugin(*starttls_args(stack, "probe", "-vvv"))
    assert_state(run, 0, "OK")
    assert "SMTP > " in run.stdout and "IMAP > " in run.stdout  # the trace is there
    for secret in (password, plain, base64.b64encode(password.encode()).decode()):
        assert secret not in run.stdout + run.stderr
    assert "<AUTH exchange hidden>" in run.stdout and "<LOGIN command hidden>" in run.stdout


def test_server_echoing_credentials_in_its_error_is_masked(tmp_path):
    # A server that quotes the AUTH line back in its 535 reply.
    password = "Echo-Me-If-You-Dare-7"
    (tmp_path / "pw").write_text(password + "\n")

    def respond(line):
        if line.upper().startswith(b"EHLO"):
            return b"250-echo\r\n250 AUTH PLAIN\r\n"
        if line.upper().startswith(b"AUTH"):
            return b"535 5.7.8 rejected: " + line.strip() + b" / " + password.encode() + b"\r\n"
        return None

    server, _ = _scripted_smtp_peer(respond)
    run = run_plugin(
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(server.getsockname()[1]),
        "--smtp-security",
        "none",
        "--mode",
        "submit",
        "--smtp-user",
        "probe@example.test",
        "--smtp-password-file",
        str(tmp_path / "pw"),
        "-vvv",
    )
    server.close()
    assert_state(run, 2, "CRITICAL", "SMTP AUTH rejected: 535 5.7.8 rejected: AUTH PLAIN ******** / ********")
    plain = base64.b64encode(f"\0probe@example.test\0{password}".encode()).decode()
    assert password not in run.stdout and plain not in run.stdout


def test_password_from_environment(stack):
    password = open(stack.password_file("probe")).read().strip()
    args = [
        a for a in starttls_args(stack) if a not in ("--smtp-password-file", stack.password_file("probe"))
    ]
    run = run_plugin(*args, env={"CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD": password})
    assert_state(run, 0, "OK")
