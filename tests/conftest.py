"""Shared fixtures: the real mail stack, and running the installed plugin.

Integration tests run the *installed* ``check_email_roundtrip`` command as a
subprocess, as Nagios would, against the loopback stack of the ``mailstack``
package (tests/mailstack/, placed by $MAILSTACK_DIR and $MAILSTACK_PORT_BASE).
The stack is brought up once per session (installing Debian packages when
missing); if this session started it, it is stopped again at the end.

Tests marked ``installed_deb`` need the Debian package built from debian/
installed (and root): they run only with ``--installed-deb``, as CI's run on
Debian's own libraries does (.ci/run); otherwise they are deselected.  The
header of every run names the libraries it tests with, in the test process
and in the interpreter of the plugin found on PATH.
"""

import atexit
import concurrent.futures
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from mailstack import TLS_HOSTNAME, MailStack  # noqa: E402

PLUGIN = "check_email_roundtrip"
PASSWORD_ENV = ("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD")
STATUS_LINE = re.compile(r"^EMAIL_ROUNDTRIP (OK|WARNING|CRITICAL|UNKNOWN) - \S")
PERF_ITEM = re.compile(r"^([a-z0-9_]+)=(-?\d+(?:\.\d+)?)(s|c)?((?:;[^;\s]*){0,4})$")


# the runtime dependencies: distribution name, module to import
DEPENDENCIES = (("nagiosplugin", "nagiosplugin"), ("dnspython", "dns"), ("authres", "authres"))
_VERSIONS_SCRIPT = (
    "import importlib, json, sys\n"
    "from importlib import metadata\n"
    "found = {}\n"
    f"for dist, module in {DEPENDENCIES!r} + (('check_email_roundtrip', 'check_email_roundtrip'),):\n"
    "    try:\n"
    "        found[dist] = [metadata.version(dist), importlib.import_module(module).__file__]\n"
    "    except Exception as exc:\n"
    "        found[dist] = [None, repr(exc)]\n"
    "print(json.dumps({'python': sys.executable, 'version': sys.version.split()[0], 'found': found}))\n"
)


def library_versions(interpreter: Optional[str] = None, **run_args) -> dict:
    """{'python', 'version', 'found': {dist: [version, module file]}} of this
    process, or of another interpreter run with run_args (cwd, user, env)."""
    import json

    if interpreter is None:
        namespace: dict = {}
        from contextlib import redirect_stdout
        from io import StringIO

        with redirect_stdout(StringIO()) as out:
            exec(_VERSIONS_SCRIPT, namespace)
        return json.loads(out.getvalue())
    done = subprocess.run([interpreter, "-c", _VERSIONS_SCRIPT], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, **run_args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def shebang_interpreter(path: str) -> Optional[str]:
    """The interpreter of a '#!/path/python3' script, None for anything else."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8", "replace").strip()
    words = first[2:].split() if first.startswith("#!") else []
    return words[0] if words and "python" in os.path.basename(words[0]) else None


def _describe_versions(where: str, found: dict) -> str:
    parts = []
    for dist, (version, location) in found["found"].items():
        parts.append(f"{dist} {version} ({os.path.dirname(location) if version else location})")
    return f"{where}: Python {found['version']} {found['python']}; " + ", ".join(parts)


def pytest_addoption(parser):
    parser.addoption("--installed-deb", action="store_true",
                     help="also run the tests marked installed_deb: the Debian package built from "
                          "debian/ is installed (CI's run on Debian's libraries)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--installed-deb"):
        return
    deselected = [item for item in items if item.get_closest_marker("installed_deb")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("installed_deb")]


def pytest_report_header(config):
    lines = [_describe_versions("tests", library_versions())]
    plugin = shutil.which(PLUGIN)
    if not plugin:
        return lines + [f"plugin: no {PLUGIN} on PATH"]
    interpreter = shebang_interpreter(plugin)
    if interpreter is None:
        return lines + [f"plugin: {plugin} (not a Python script: a shim?)"]
    # as the plugin imports them: from / (not the repository), no PYTHONPATH
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    lines.append(_describe_versions(f"plugin {plugin}", library_versions(interpreter, cwd="/", env=env)))
    return lines


# default state directories of the plugin runs, removed when the session ends
_STATE_ROOT = tempfile.mkdtemp(prefix="cer-state-")
atexit.register(shutil.rmtree, _STATE_ROOT, True)


@dataclass
class PluginRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def state(self) -> str:
        match = STATUS_LINE.match(self.first_line)
        return match.group(1) if match else "(no status line)"

    @property
    def perfdata(self) -> dict[str, float]:
        """Perfdata as label -> value, checked for the conventions on the way."""
        assert self.stdout.count("|") <= 1, self.stdout
        if "|" not in self.stdout:
            return {}
        values = {}
        for item in self.stdout.split("|", 1)[1].split():
            match = PERF_ITEM.match(item)
            assert match, f"malformed perfdata item {item!r}"
            values[match.group(1)] = float(match.group(2))
        return values

    def describe(self) -> str:
        return (f"exit {self.returncode} after {self.seconds:.2f} s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


def run_plugin(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 120) -> PluginRun:
    executable = shutil.which(PLUGIN)
    assert executable, f"{PLUGIN} is not installed (pip install .)"
    full_env = {key: value for key, value in os.environ.items() if key not in PASSWORD_ENV}
    # each run its own default state file, unless a test names one: no test
    # sees another's undelivered probes
    full_env["XDG_STATE_HOME"] = tempfile.mkdtemp(dir=_STATE_ROOT)
    full_env.update(env or {})
    started = time.monotonic()
    done = subprocess.run([executable, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return PluginRun(list(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def assert_state(run: PluginRun, exit_code: int, state: str, first_line_contains: str = "") -> None:
    """The check_systemd-style assertion: exit code, state word, cause in line 1."""
    assert run.returncode == exit_code, run.describe()
    assert run.state == state, run.describe()
    assert first_line_contains in run.first_line, run.describe()
    assert run.stderr == "", run.describe()
    assert "Traceback" not in run.stdout, run.describe()


@pytest.fixture(scope="session")
def stack():
    mailstack = MailStack(verbose=False)
    was_running = mailstack.healthy() if os.path.exists(mailstack.stack_json) else False
    mailstack.up()
    yield mailstack
    if not was_running:
        mailstack.down()


@pytest.fixture
def free_port():
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scripted_peer(respond=None, greeting=b"220 scripted ESMTP\r\n"):
    """A loopback peer for one client: silent, or a script that greets and then
    answers line by line (respond(line) -> reply, None hangs up).  Close it when done."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            if respond is None:
                while conn.recv(4096):  # say nothing until the client gives up
                    pass
                return
            conn.sendall(greeting)
            for line in conn.makefile("rb"):
                reply = respond(line)
                if reply is None:
                    return
                if reply:
                    conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server


# -- OAuth2: shared by test_oauth_stack.py (stdlib clients) and test_oauth_plugin_stack.py ----------
@pytest.fixture
def idp(stack):
    """stack.oauth, with counters, endpoints and lifetimes as configured
    before and after each test."""
    stack.oauth.reset()
    yield stack.oauth
    stack.oauth.reset()


def sasl_response(mechanism, user, token, port):
    """The XOAUTH2 or OAUTHBEARER initial response for a server reached as TLS_HOSTNAME:port."""
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01"
    return f"n,a={user},\x01host={TLS_HOSTNAME}\x01port={port}\x01auth=Bearer {token}\x01\x01"


def all_at_once(*calls):
    """Run the calls in parallel (each failed login waits 2 s); their results in order."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]
