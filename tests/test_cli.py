"""The installed command's contract without any server: usage errors, version."""

from conftest import assert_state, run_plugin


def test_bad_option_is_unknown_with_one_line():
    run = run_plugin("--bogus")
    assert_state(run, 3, "UNKNOWN", "unrecognized arguments: --bogus")
    assert len(run.lines) == 1


def test_missing_server_is_unknown_with_one_line():
    run = run_plugin("--from", "a@example.test")
    assert_state(run, 3, "UNKNOWN", "no SMTP server: give -H/--hostname or --smtp-host")
    assert len(run.lines) == 1


def test_bad_range_is_unknown():
    run = run_plugin("-H", "localhost", "--from", "a@example.test", "-w", "10:5")
    assert_state(run, 3, "UNKNOWN", "argument -w/--warning: invalid range")


def test_version_and_help():
    run = run_plugin("-V")
    assert run.returncode == 0 and run.stdout.startswith("check_email_roundtrip ")
    run = run_plugin("--help")
    assert run.returncode == 0 and "--smtp-password-file" in run.stdout


def test_runs_as_module():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "check_email_roundtrip", "-V"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("check_email_roundtrip ")


def test_missing_dependency_is_unknown_not_a_traceback(tmp_path):
    # A module named nagiosplugin that fails to import, first on the path.
    (tmp_path / "nagiosplugin.py").write_text(
        "raise ImportError(\"No module named 'nagiosplugin'\", name='nagiosplugin')\n"
    )
    run = run_plugin("-H", "localhost", "--from", "a@example.test", env={"PYTHONPATH": str(tmp_path)})
    assert_state(run, 3, "UNKNOWN", "missing Python module nagiosplugin")
    assert len(run.lines) == 1


def test_wheel_builds_with_the_console_script(tmp_path):
    import pathlib
    import subprocess
    import sys
    import zipfile

    root = pathlib.Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("check_email_roundtrip-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(name for name in archive.namelist() if name.endswith("entry_points.txt"))
        assert (
            "check_email_roundtrip = check_email_roundtrip.__main__:main"
            in archive.read(entry_points).decode()
        )
        assert any(name.endswith("check_email_roundtrip/verdicts.py") for name in archive.namelist())
