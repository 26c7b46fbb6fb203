"""--no-wait against the real stack: each run sends, and judges what earlier
runs sent (round trip from the server's delivery time, age against -w/-c)."""

import json
import re
import threading
import time

import pytest
from conftest import assert_state, run_plugin
from test_roundtrip_stack import implicit_tls_args

NO_WAIT_LABELS = {
    "pending",
    "late",
    "lost",
    "smtp_connect",
    "smtp_auth",
    "smtp_submit",
    "smtp_total",
    "smtp_cert_days",
    "imap_cert_days",
}


@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


@pytest.fixture
def greylisting(stack):
    yield
    stack.set_greylist_seconds()


def no_wait(stack, state, *extra):
    return run_plugin(*implicit_tls_args(stack, "probe", "--state-file", str(state), "--no-wait", *extra))


def _release_after(stack, seconds):
    def release():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stack.queue_ids("hold"):
            time.sleep(0.05)
        time.sleep(seconds)
        stack.release_held()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_first_run_has_nothing_to_judge_and_says_so(stack, tmp_path):
    state = tmp_path / "state.json"
    run = no_wait(stack, state)
    assert_state(
        run, 0, "OK", "EMAIL_ROUNDTRIP OK - first run: nothing earlier to judge; this run's probe queued as "
    )
    assert set(run.perfdata) == NO_WAIT_LABELS and run.perfdata["pending"] == 1
    assert run.seconds < 5  # it does not wait
    assert len(json.loads(state.read_text())["pending"]) == 1


def test_delivered_earlier_probe_is_judged_by_the_servers_delivery_time(stack, held_queue, tmp_path):
    state = tmp_path / "state.json"
    thread = _release_after(stack, 3.0)
    assert_state(no_wait(stack, state, "--to", "probe+hold@example.test"), 0, "OK", "first run")
    thread.join()
    time.sleep(1)
    run = no_wait(stack, state, "-w", "60", "-c", "300")
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert "(INBOX, by the server's delivery time); this run's probe queued as " in run.first_line
    # held for 3 s: INTERNALDATE has whole seconds, so within a second of it
    assert 2.0 <= run.perfdata["roundtrip"] <= 4.5, run.stdout
    assert [line.split("=")[0] for line in run.lines[1:-1]] == ["spf", "dkim", "dmarc"]  # the judged one's
    assert run.perfdata["pending"] == 1  # only this run's probe is left


def test_within_a_second_of_the_waiting_modes_figure(stack, held_queue, tmp_path):
    thread = _release_after(stack, 2.0)
    waiting = run_plugin(*implicit_tls_args(stack, "probe", "--to", "probe+hold@example.test", "--no-state"))
    thread.join()
    assert_state(waiting, 0, "OK")
    state = tmp_path / "state.json"
    thread = _release_after(stack, 2.0)
    no_wait(stack, state, "--to", "probe+hold@example.test")
    thread.join()
    time.sleep(1)
    judged = no_wait(stack, state)
    assert_state(judged, 0, "OK", "round trip ")
    assert abs(judged.perfdata["roundtrip"] - waiting.perfdata["roundtrip"]) <= 1.0 + 0.5, (
        waiting.stdout + judged.stdout
    )


def test_greylisted_probe_is_pending_then_reported_late(stack, greylisting, tmp_path):
    state = tmp_path / "state.json"
    stack.set_greylist_seconds(4)
    assert_state(no_wait(stack, state, "--to", "probe+greylist@example.test"), 0, "OK", "first run")
    run = no_wait(stack, state, "-w", "30", "-c", "60")
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - the probe of ")
    assert re.search(r"on its way for \d+ s; this run's probe queued as ", run.first_line), run.stdout
    assert run.perfdata["pending"] == 2
    time.sleep(6)
    run = no_wait(stack, state, "-w", "30", "-c", "60")
    assert_state(run, 0, "OK", "round trip ")  # the previous run's probe, not greylisted
    late = [line for line in run.lines if "arrived late, after" in line]
    assert len(late) == 1, run.stdout
    assert int(re.search(r"after (\d+) s", late[0]).group(1)) >= 3  # the greylisting delay
    assert (run.perfdata["late"], run.perfdata["pending"]) == (1, 1)


def test_greylisted_probe_judged_late_against_w(stack, greylisting, tmp_path):
    state = tmp_path / "state.json"
    stack.set_greylist_seconds(4)
    no_wait(stack, state, "--to", "probe+greylist@example.test")
    time.sleep(6)
    run = no_wait(stack, state, "-w", "2", "-c", "60")
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - roundtrip ")
    assert "(outside range 0:2)" in run.first_line and run.perfdata["roundtrip"] >= 3


def test_probe_older_than_c_is_critical(stack, held_queue, tmp_path):
    state = tmp_path / "state.json"
    no_wait(stack, state, "--to", "probe+hold@example.test")
    time.sleep(2.5)
    run = no_wait(stack, state, "-w", "1", "-c", "2")
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - not delivered after ")
    assert re.search(r"not delivered after \d+ s \(probe of .* \(queued as \w+\)\)", run.first_line), (
        run.stdout
    )
    assert run.perfdata["pending"] == 2


def test_judged_probe_in_junk_and_bounced(stack, tmp_path):
    state = tmp_path / "junk.json"
    no_wait(stack, state, "--to", "probe+junk@example.test")
    time.sleep(1.5)
    run = no_wait(stack, state)
    assert_state(run, 1, "WARNING", 'EMAIL_ROUNDTRIP WARNING - delivered to Junk folder "Junk" after ')
    state = tmp_path / "bounce.json"
    no_wait(stack, state, "--to", "nobody@example.test")
    time.sleep(1.5)
    run = no_wait(stack, state)
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - bounced after ")
    assert "550 5.1.1 <nobody@example.test>" in run.first_line


def test_no_wait_needs_memory(stack):
    run = run_plugin(*implicit_tls_args(stack, "probe", "--no-wait", "--no-state"))
    assert_state(run, 3, "UNKNOWN", "--no-wait needs --mode roundtrip and memory across runs")
