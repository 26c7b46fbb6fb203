"""Memory across runs against the real stack: late, lost, slow streaks, the state file."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import assert_state, run_plugin
from test_roundtrip_stack import implicit_tls_args


@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


def probe(stack, state_file, *extra):
    return run_plugin(*implicit_tls_args(stack, "probe", "--state-file", str(state_file), *extra))


def test_held_message_is_reported_late_by_the_next_run(stack, held_queue, tmp_path):
    state = tmp_path / "state.json"
    run = probe(stack, state, "--to", "probe+hold@example.test", "--wait", "2")
    assert_state(run, 2, "CRITICAL", "not delivered within 2 s (queued as ")
    queue_id = re.search(r"queued as (\w+)", run.first_line).group(1)
    assert json.loads(state.read_text())["pending"][0]["queue_id"] == queue_id
    stack.release_held()
    time.sleep(1)
    run = probe(stack, state)
    assert_state(run, 0, "OK")
    late = [line for line in run.lines if "arrived late" in line]
    assert len(late) == 1 and f"(queued as {queue_id}) arrived late, after " in late[0], run.stdout
    # held for over 2 s; INTERNALDATE has whole seconds, so up to 1 s less shows
    assert int(re.search(r"after (\d+) s", late[0]).group(1)) >= 1
    assert (run.perfdata["late"], run.perfdata["lost"]) == (1, 0)
    assert json.loads(state.read_text())["pending"] == []


def test_probe_missing_past_the_horizon_counts_lost(stack, held_queue, tmp_path):
    state = tmp_path / "state.json"
    run = probe(stack, state, "--to", "probe+hold@example.test", "--wait", "1")
    assert_state(run, 2, "CRITICAL", "not delivered within 1 s")
    time.sleep(2.5)
    run = probe(stack, state, "--lost-after", "2")
    assert_state(run, 0, "OK")
    assert any(line.endswith("lost: not arrived after 2 s") for line in run.lines), run.stdout
    assert (run.perfdata["late"], run.perfdata["lost"]) == (0, 1)


def test_consecutive_slow_round_trips_escalate(stack, tmp_path):
    state = tmp_path / "state.json"
    slow = ("-w", "0.001", "-c", "60", "--escalate-after", "3")  # every round trip is "slow"
    for _ in range(2):
        assert_state(probe(stack, state, *slow), 1, "WARNING", "roundtrip ")
    run = probe(stack, state, *slow)
    assert_state(
        run,
        2,
        "CRITICAL",
        "EMAIL_ROUNDTRIP CRITICAL - round trip not OK in 3 consecutive runs (--escalate-after 3)",
    )
    assert_state(probe(stack, state, "--escalate-after", "3"), 0, "OK")  # an OK run resets the streak
    assert json.loads(state.read_text())["slow_streak"] == 0


def test_a_file_that_is_not_our_state_is_left_alone_and_said(stack, tmp_path):
    # a mistyped --state-file must never destroy what is there
    state = tmp_path / "state.json"
    state.write_text("{this is not json")
    run = probe(stack, state)
    assert_state(run, 1, "WARNING", f"state file {state} is not a state file of check_email_roundtrip")
    assert state.read_text() == "{this is not json"
    state.write_text('{"users": ["root"]}')  # JSON, but not ours
    run = probe(stack, state)
    assert_state(run, 1, "WARNING", "is not a state file of check_email_roundtrip: left alone")
    assert state.read_text() == '{"users": ["root"]}'


def test_state_file_that_is_a_link_is_never_followed(stack, tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    state = tmp_path / "state.json"
    state.symlink_to(victim)
    run = probe(stack, state)
    assert_state(run, 1, "WARNING", f"state file {state} cannot be used (is a symbolic link)")
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n" and state.is_symlink()


def test_state_file_is_private_and_entries_that_make_no_sense_are_dropped(stack, tmp_path):
    state = tmp_path / "state.json"
    good = {"marker": "emailrtprobe" + "0" * 24, "sent_at": time.time() - 10, "queue_id": None}
    entries = [
        good,
        {"marker": "emailrtprobe" + "1" * 24, "sent_at": "NaN"},
        {"marker": "x", "sent_at": 1e300},
        {"marker": "emailrtprobe" + "2" * 24, "sent_at": 1e18},
    ]
    state.write_text(
        json.dumps({"format": "check_email_roundtrip state", "version": 2, "pending": entries}).replace(
            '"NaN"', "NaN"
        )
    )
    run = probe(stack, state)
    assert_state(run, 0, "OK")
    assert f"state file {state}: dropped 3 entries that made no sense" in run.lines, run.stdout
    data = json.loads(state.read_text())
    assert [entry["marker"] for entry in data["pending"]] == [good["marker"]]
    assert state.stat().st_mode & 0o777 == 0o600


def test_unusable_state_file_is_a_warning_not_a_crash(stack, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = probe(stack, blocker / "state.json")  # a directory that is a file
    assert_state(
        run, 1, "WARNING", f"EMAIL_ROUNDTRIP WARNING - state file {blocker}/state.json cannot be used ("
    )


def test_concurrent_runs_share_one_state_file(stack, tmp_path):
    state = tmp_path / "state.json"
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: probe(stack, state, "-w", "0.001", "-c", "60"), range(4)))
    for run in runs:
        assert_state(run, 1, "WARNING")
    assert json.loads(state.read_text())["slow_streak"] == 4  # every run's update merged, none lost


def test_a_late_probe_found_by_several_runs_at_once_is_counted_once(stack, held_queue, tmp_path):
    state = tmp_path / "state.json"
    run = probe(stack, state, "--to", "probe+hold@example.test", "--wait", "1")
    assert_state(run, 2, "CRITICAL", "not delivered within 1 s")
    stack.release_held()
    time.sleep(1)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: probe(stack, state), range(4)))
    for run in runs:
        assert_state(run, 0, "OK")
    assert sum("arrived late" in run.stdout for run in runs) >= 1
    assert json.loads(state.read_text())["late"] == 1
    assert {run.perfdata["late"] for run in runs} == {1}
