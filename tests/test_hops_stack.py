"""Hop delays on the real stack: greylisting at the inbound MX shows at its hop,
in the waiting mode, with --no-wait, and for a late probe a later run finds."""

import re
import time

import pytest
from conftest import assert_state, run_plugin
from test_nowait_stack import NO_WAIT_LABELS
from test_roundtrip_stack import IMPLICIT_TLS_LABELS, implicit_tls_args

GREYLIST = 4  # seconds the inbound MX defers probe+greylist@
GREYLISTED = "probe+greylist@example.test"
# -v: "     4 s  before mx.example.test (ESMTP)  trusted"
HOP_LINE = re.compile(r"^ *(\d+) s  before (\S+)(?: \((\S+)\))? +(trusted|claimed)(  clock skew.*)?$")
# the stack's path, oldest first: submission (below the MX's Authentication-Results: the
# sender side's claim), the inbound MX, the LMTP delivery
CHAIN = [
    ("localhost", "ESMTPSA", "claimed"),
    ("mx.example.test", "ESMTP", "trusted"),
    ("localhost", "LMTP", "trusted"),
]
SLOWEST_MX = r"slowest hop: (\d+) s before mx\.example\.test \(ESMTP\)"
WARNING_LINE = re.compile(
    rf"EMAIL_ROUNDTRIP WARNING - roundtrip \d+\.\d{{3}} s \(outside range 0:2\), {SLOWEST_MX}"
)
FOUND_LABELS = {"roundtrip", "imap_retrieval", "auth_spf", "auth_dkim", "auth_dmarc", "hop_max", "hops"}


@pytest.fixture
def greylisting(stack):
    stack.set_greylist_seconds(GREYLIST)
    yield
    stack.set_greylist_seconds()


def hop_table(run, title):
    """The -v table under the line starting with ``title``: (seconds, by, protocol, trust)."""
    lines = run.lines
    start = next((n for n, line in enumerate(lines) if line.startswith(title)), None)
    assert start is not None, f"no hop table {title!r}\n{run.describe()}"
    rows = []
    for line in lines[start + 1 :]:
        match = HOP_LINE.match(line)
        if not match:
            break
        assert match.group(5) is None, f"clock skew on one machine?\n{run.describe()}"
        rows.append((int(match.group(1)), match.group(2), match.group(3), match.group(4)))
    return rows


def assert_greylisted_chain(run, rows):
    assert [row[1:] for row in rows] == CHAIN, run.describe()
    submission, mx, lmtp = (row[0] for row in rows)
    assert abs(mx - GREYLIST) <= 1, f"MX hop {mx} s, greylisting {GREYLIST} s\n{run.describe()}"
    assert submission <= 1 and lmtp <= 1, run.describe()
    return mx


def test_greylisting_is_the_mx_hop_and_a_warning_names_it(stack, greylisting):
    run = run_plugin(
        *implicit_tls_args(stack, "probe", "--to", GREYLISTED, "-w", "2", "-c", "30", "--wait", "15", "-v")
    )
    assert_state(run, 1, "WARNING")
    match = WARNING_LINE.fullmatch(run.first_line)
    assert match, run.describe()
    mx = assert_greylisted_chain(run, hop_table(run, "hops of the probe,"))
    assert int(match.group(1)) == mx
    assert set(run.perfdata) == IMPLICIT_TLS_LABELS
    assert (run.perfdata["hop_max"], run.perfdata["hops"]) == (mx, 3)


def test_an_ok_run_keeps_its_line_and_shows_its_hops_from_v_on(stack):
    run = run_plugin(*implicit_tls_args(stack))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert "hops of" not in run.stdout and "slowest hop" not in run.stdout
    run = run_plugin(*implicit_tls_args(stack, "probe", "-v"))
    assert_state(run, 0, "OK")
    assert re.fullmatch(
        r"EMAIL_ROUNDTRIP OK - round trip \d+\.\d{3} s \(INBOX, queued as \w+\)", run.first_line
    )
    rows = hop_table(run, "hops of the probe,")
    assert [row[1:] for row in rows] == CHAIN and all(row[0] <= 1 for row in rows), run.describe()
    assert set(run.perfdata) == IMPLICIT_TLS_LABELS and run.perfdata["hop_max"] <= 1


def test_no_wait_reads_the_judged_probes_hops(stack, greylisting, tmp_path):
    state = tmp_path / "state.json"
    args = ("--state-file", str(state), "--no-wait")
    assert_state(
        run_plugin(*implicit_tls_args(stack, "probe", *args, "--to", GREYLISTED)), 0, "OK", "first run"
    )
    time.sleep(GREYLIST + 3)
    run = run_plugin(*implicit_tls_args(stack, "probe", *args, "-w", "2", "-c", "60", "-v"))
    assert_state(run, 1, "WARNING")
    match = WARNING_LINE.fullmatch(run.first_line)
    assert match, run.describe()
    mx = assert_greylisted_chain(run, hop_table(run, "hops of the judged probe,"))
    assert int(match.group(1)) == mx
    assert set(run.perfdata) == NO_WAIT_LABELS | FOUND_LABELS
    assert (run.perfdata["hop_max"], run.perfdata["hops"]) == (mx, 3)


def test_a_late_probe_found_by_a_later_run_has_its_hops(stack, greylisting, tmp_path):
    state = tmp_path / "state.json"
    run = run_plugin(
        *implicit_tls_args(stack, "probe", "--state-file", str(state), "--to", GREYLISTED, "--wait", "1")
    )
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - not delivered within 1 s (queued as ")
    time.sleep(GREYLIST + 3)
    run = run_plugin(*implicit_tls_args(stack, "probe", "--state-file", str(state), "-v"))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    late = [n for n, line in enumerate(run.lines) if "arrived late, after" in line]
    assert late, run.describe()  # the first of two: the -v log says it again
    probe = run.lines[late[0]].split(" arrived late")[0]  # "probe of <time> (queued as <id>)"
    assert run.lines[late[0] + 1].startswith(f"hops of the {probe}, "), run.describe()
    assert_greylisted_chain(run, hop_table(run, f"hops of the {probe}, "))
    # this run's own probe was not greylisted; it is what hop_max and hops describe
    own = hop_table(run, "hops of the probe,")
    assert [row[1:] for row in own] == CHAIN and run.perfdata["hop_max"] <= 1, run.describe()
    assert set(run.perfdata) == IMPLICIT_TLS_LABELS and run.perfdata["late"] == 1


def test_a_late_probe_found_in_no_wait_mode_has_its_hops(stack, greylisting, tmp_path):
    state = tmp_path / "state.json"
    args = ("--state-file", str(state), "--no-wait")
    run_plugin(*implicit_tls_args(stack, "probe", *args, "--to", GREYLISTED))
    run = run_plugin(*implicit_tls_args(stack, "probe", *args))  # judges the first: still greylisted
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - the probe of ")
    time.sleep(GREYLIST + 3)
    run = run_plugin(*implicit_tls_args(stack, "probe", *args, "-v"))  # judges the second, the first is late
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    late = [line for line in run.lines if "arrived late, after" in line]
    assert late, run.describe()  # the first of two: the -v log says it again
    assert_greylisted_chain(run, hop_table(run, f"hops of the {late[0].split(' arrived late')[0]}, "))
    assert [row[1:] for row in hop_table(run, "hops of the judged probe,")] == CHAIN
