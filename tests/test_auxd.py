"""auxd, the mail stack's own daemon, without the stack: the greylisting
decision over time, the Postfix policy protocol, the TLS front's relaying."""

import ast
import contextlib
import io
import re
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from mailstack import auxd

DEFER = "defer_if_permit 4.7.1 Greylisted, try again later"
REQUEST = {"request": "smtpd_access_policy", "client_address": "127.0.0.1", "sender": "probe@example.test",
           "recipient": "probe+greylist@example.test", "size": "1041", "queue_id": ""}


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def seconds_file(tmp_path):
    path = tmp_path / "greylist-seconds"
    path.write_text("3\n")
    return path


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def greylist(seconds_file, clock):
    cfg = {"greylist_seconds_file": str(seconds_file), "greylist_default_seconds": 3,
           "greylist_stale_seconds": 30, "greylist_action": DEFER}
    return auxd.Greylist(cfg, clock=clock)


def actions(greylist, clock, times, request=REQUEST):
    out = []
    for t in times:
        clock.now = 1_000_000.0 + t
        out.append(greylist.decide(request)[0])
    return out


# -- the decision over time ---------------------------------------------------
def test_a_message_is_deferred_until_it_was_first_seen_n_seconds_ago(greylist, clock):
    assert actions(greylist, clock, [0, 1, 2.999, 3]) == [DEFER, DEFER, DEFER, "dunno"]


def test_a_passed_message_is_forgotten_and_the_next_one_waits_again(greylist, clock):
    assert actions(greylist, clock, [0, 3, 3.5, 6.4, 6.5]) == [DEFER, "dunno", DEFER, DEFER, "dunno"]
    assert greylist.seen == {}


def test_the_reasons_say_what_happened(greylist, clock):
    clock.now = 0.0
    assert greylist.decide(REQUEST)[2] == "first seen, N=3s"
    clock.now = 1.25
    assert greylist.decide(REQUEST)[2] == "age 1.250s < N=3s"
    clock.now = 3.5
    action, key, why = greylist.decide(REQUEST)
    assert (action, why) == ("dunno", "passed after 3.500s (N=3s)")
    assert key == ("127.0.0.1", "probe@example.test", "probe+greylist@example.test", "1041")


def test_zero_seconds_lets_everything_through_and_remembers_nothing(greylist, clock, seconds_file):
    seconds_file.write_text("0\n")
    assert greylist.decide(REQUEST) == ("dunno", auxd.Greylist.key(REQUEST), "greylisting off (N=0)")
    assert greylist.seen == {}


def test_n_is_read_when_a_message_is_first_seen_and_kept_for_it(greylist, clock, seconds_file):
    seconds_file.write_text("5\n")
    assert actions(greylist, clock, [0]) == [DEFER]
    seconds_file.write_text("1\n")      # a later change does not shorten its wait
    assert actions(greylist, clock, [2, 4.9, 5]) == [DEFER, DEFER, "dunno"]


def test_fractional_seconds(greylist, clock, seconds_file):
    seconds_file.write_text("0.5\n")
    assert actions(greylist, clock, [0, 0.4, 0.5]) == [DEFER, DEFER, "dunno"]


@pytest.mark.parametrize("content", [None, "", "soon\n"])
def test_a_missing_or_unreadable_seconds_file_means_the_default(greylist, seconds_file, content):
    if content is None:
        seconds_file.unlink()
    else:
        seconds_file.write_text(content)
    assert greylist.seconds() == 3.0
    assert auxd.read_greylist_seconds(str(seconds_file), 7) == 7.0


def test_sender_and_recipient_case_do_not_make_another_message(greylist, clock):
    shouting = dict(REQUEST, sender="PROBE@example.test", recipient="Probe+Greylist@EXAMPLE.test")
    clock.now = 0.0
    greylist.decide(REQUEST)
    clock.now = 3.0
    assert greylist.decide(shouting)[0] == "dunno"


def test_a_different_size_client_or_recipient_is_another_message(greylist, clock):
    clock.now = 0.0
    greylist.decide(REQUEST)
    clock.now = 3.0
    for other in (dict(REQUEST, size="1042"), dict(REQUEST, client_address="127.0.0.2"),
                  dict(REQUEST, recipient="other+greylist@example.test")):
        assert greylist.decide(other)[0] == DEFER
    assert greylist.decide(REQUEST)[0] == "dunno"


def test_an_entry_whose_message_never_came_back_is_started_afresh(greylist, clock):
    clock.now = 0.0
    greylist.decide(REQUEST)
    clock.now = 33.0                    # N + stale: still remembered
    assert greylist.decide(dict(REQUEST, size="1"))[0] == DEFER
    assert auxd.Greylist.key(REQUEST) in greylist.seen
    clock.now = 33.001                  # past N + stale: forgotten, waits again
    assert greylist.decide(REQUEST) == (DEFER, auxd.Greylist.key(REQUEST), "first seen, N=3s")


# -- the policy protocol ---------------------------------------------------------
def test_a_request_is_read_up_to_the_empty_line():
    stream = io.BytesIO(b"request=smtpd_access_policy\r\nsender=a@b\nccert_subject=CN=x=y\n\nsize=1\n\n")
    assert auxd.read_policy_request(stream) == {"request": "smtpd_access_policy", "sender": "a@b",
                                               "ccert_subject": "CN=x=y"}
    assert auxd.read_policy_request(stream) == {"size": "1"}
    assert auxd.read_policy_request(stream) is None


def test_a_request_cut_off_by_the_end_of_input_is_none():
    assert auxd.read_policy_request(io.BytesIO(b"request=smtpd_access_policy\n")) is None


def test_the_reply_is_one_action_line_and_an_empty_line():
    assert auxd.policy_reply("dunno") == b"action=dunno\n\n"
    assert auxd.policy_reply(DEFER) == f"action={DEFER}\n\n".encode()


def test_anything_but_a_policy_request_is_answered_dunno(greylist, capsys):
    assert greylist.answer({"request": "junk", "recipient": "x"}) == "dunno"
    assert greylist.seen == {}
    assert "greylist None -> action=dunno (not a policy request) queue_id=" in capsys.readouterr().err


def test_one_connection_carries_several_requests(greylist, clock, capsys):
    ours, postfix = socket.socketpair()
    worker = threading.Thread(target=greylist.handle, args=(ours, ("unix", 0)))
    worker.start()
    request = "".join(f"{k}={v}\n" for k, v in REQUEST.items()).encode() + b"\n"
    with postfix, postfix.makefile("rwb") as stream:
        stream.write(request)
        stream.flush()
        assert stream.readline() == f"action={DEFER}\n".encode() and stream.readline() == b"\n"
        clock.now += 3
        stream.write(request)
        stream.flush()
        assert stream.readline() == b"action=dunno\n" and stream.readline() == b"\n"
    worker.join(5)
    assert not worker.is_alive()          # Postfix closed: the handler returns
    log = capsys.readouterr().err
    assert log.count("auxd: greylist ('127.0.0.1', 'probe@example.test'") == 2


def test_log_lines_carry_microseconds(capsys):
    auxd.log("hello")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} auxd: hello\n", capsys.readouterr().err)


# -- the TLS front -------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    where = tmp_path_factory.mktemp("auxd-tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def backend():
    """A stand-in for Dovecot: a greeting, then every line echoed."""
    server = auxd.listen("127.0.0.1", 0)

    def serve_one():
        try:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"* OK backend ready\r\n")
                while data := conn.recv(4096):
                    conn.sendall(b"echo " + data)
        except OSError:  # the test ended (the listener or the peer closed) before the echo did
            pass

    threading.Thread(target=serve_one, daemon=True).start()
    yield server.getsockname()
    server.close()


@pytest.fixture
def front(certificate, backend):
    cert, key = certificate
    tls_front = auxd.TLSFront({"cert": cert, "key": key, "imap_backend": list(backend)})
    listener = auxd.listen("127.0.0.1", 0)
    threading.Thread(target=auxd.serve, args=(listener, tls_front.handle), daemon=True).start()
    yield listener.getsockname()
    listener.close()


def test_the_front_presents_its_certificate_and_relays_both_ways(front, certificate):
    context = ssl.create_default_context(cafile=certificate[0])
    with socket.create_connection(front, timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        stream = tls.makefile("rwb")
        assert stream.readline() == b"* OK backend ready\r\n"
        stream.write(b"a1 NOOP\r\n")
        stream.flush()
        assert stream.readline() == b"echo a1 NOOP\r\n"


def test_a_client_that_refuses_the_certificate_gets_no_session(front):
    context = ssl.create_default_context()     # the system store: our self-signed one fails
    with socket.create_connection(front, timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="localhost")


def test_a_bare_tcp_probe_is_not_logged_but_a_bad_handshake_is(front, capsys):
    socket.create_connection(front, timeout=5).close()       # what "status" does
    with socket.create_connection(front, timeout=5) as raw, contextlib.suppress(OSError):
        raw.sendall(b"a1 LOGIN plaintext\r\n")
        raw.recv(100)                   # an alert, or the front hangs up
    log = ""
    for _ in range(100):
        log += capsys.readouterr().err
        if log:
            break
        time.sleep(0.05)
    assert "handshake failed" in log and log.count("\n") == 1, log


# -- auxd stands alone ---------------------------------------------------------------
def test_auxd_imports_nothing_but_the_standard_library():
    """The stack runs a copy of auxd.py with the system's python3, away from
    this package: no relative imports, no third-party modules."""
    tree = ast.parse(open(auxd.__file__).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in auxd.py"
            names.add(node.module.split(".")[0])
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is not None:
        assert names <= stdlib, names - stdlib
