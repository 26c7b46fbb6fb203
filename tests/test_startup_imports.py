"""A run loads only what its mode and options use (issue 17): the installed
plugin, run with Python's own import log (PYTHONPROFILEIMPORTTIME), against
nothing listening and against the real stack.

Each module named here cost every run milliseconds before it was kept out:
typing about 3 ms (the package says TYPE_CHECKING = False instead), the IDNA
codec 1.5-2 ms (ASCII host names go out as bytes), dnspython and the HTTP
client only for --dns-checks and a token request."""

import dataclasses
import re

from conftest import assert_state, run_plugin
from mailstack import DNS_PORT
from test_roundtrip_stack import implicit_tls_args

IMPORT_LINE = re.compile(r"^import time:\s+-?\d+ \|\s+\d+ \| ( *)(\S+)$")
NEVER_WITHOUT_A_REASON = {"typing", "encodings.idna", "dns", "http.client", "urllib.request"}


def imported(run):
    """Every module the run imported, from Python's import-time log on stderr."""
    names = set()
    for line in run.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        assert match or line.startswith("import time: self"), line  # nothing else on stderr
        if match:
            names.add(match.group(2))
    return names


def traced(*args):
    """The run with its import log taken off stderr (for assert_state), and the modules it names."""
    run = run_plugin(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    return dataclasses.replace(run, stderr=""), imported(run)


def test_a_fail_fast_run_loads_no_reader_and_no_typing(free_port):
    run, modules = traced(
        "--mode", "submit", "-H", "localhost", "--smtp-port", str(free_port), "--from", "a@example.test"
    )
    assert_state(run, 2, "CRITICAL", f"CRITICAL - SMTP connect to localhost:{free_port} refused")
    assert {"nagiosplugin", "argparse", "socket"} <= modules  # the log is read
    assert not modules & (NEVER_WITHOUT_A_REASON | {"authres", "email.parser", "ssl", "smtplib"})


def test_a_round_trip_loads_authres_to_read_verdicts_and_no_dns_typing_or_idna(stack):
    run, modules = traced(*implicit_tls_args(stack))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert {"authres", "ssl", "smtplib", "imaplib", "email.parser"} <= modules
    assert not modules & NEVER_WITHOUT_A_REASON


def test_dnspython_is_loaded_for_dns_checks(stack):
    run, modules = traced(
        *implicit_tls_args(stack, "probe", "--dns-checks", "--nameserver", f"127.0.0.1:{DNS_PORT}")
    )
    assert_state(run, 0, "OK")
    assert "dns" in modules
