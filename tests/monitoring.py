"""Real monitoring systems for the tests: Icinga 2 and Nagios 4, privately.

Standard library only; run as root on Debian 12 (no systemd needed).

    ensure_packages()                    apt-get installs icinga2-bin, icinga2-common,
                                         nagios4-core (and openssl) when missing,
                                         without starting any daemon
    icinga2_validate(text_or_paths)      -> (returncode, output) of `icinga2 daemon -C`
    Icinga2Instance(...)                 a private Icinga 2 daemon with the REST API on
                                         127.0.0.1 that runs check_email_roundtrip
    nagios4_verify(command_definition)   -> (returncode, output) of `nagios4 -v`
    readme_nagios_blocks(readme)         the `define command`/`define service` blocks
                                         of the README's "Install" section

Nothing here reads or writes /etc/icinga2 or /etc/nagios4: every path Icinga 2
uses (ConfigDir, DataDir, LogDir, CacheDir, SpoolDir, InitRunDir and the pid,
state, object-cache and vars files derived from them) is redefined with
`--define` to a directory of our own under WORK_ROOT, and Nagios gets a
nagios.cfg of its own whose every path is in a temporary directory.

Privileges: the packages' daemons run as user "nagios".  Here Icinga 2 runs
as root (`--define RunAsUser=root --define RunAsGroup=root`): the plugin may
be installed under /root (pip/pyenv, a 0700 directory), and the mail stack's
password files are root's 0600 files.  Running as nagios would need copies
of both; for a loopback test daemon that is stopped again after the test,
root is the honest choice.  Nagios is only asked to verify (`-v`), which
runs nothing.

The plugin's memory file (--state-file default: $XDG_STATE_HOME) is kept in
the instance directory: the daemon, and with it every check it runs, gets
XDG_STATE_HOME=<instance>/plugin-state.
"""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TEMPLATES_DIR = os.path.join(REPO, "icinga2-templates")
COMMAND_CONF = os.path.join(TEMPLATES_DIR, "email_roundtrip.conf")
SERVICES_CONF = os.path.join(TEMPLATES_DIR, "services.conf")
README = os.path.join(REPO, "README.md")

PLUGIN = "check_email_roundtrip"
ICINGA2 = "/usr/sbin/icinga2"
NAGIOS4 = "/usr/sbin/nagios4"
NAGIOS_PLUGIN_DIR = "/usr/lib/nagios/plugins"      # ITL PluginDir, monitoring-plugins
PACKAGES = ("icinga2-bin", "icinga2-common", "nagios4-core", "openssl")
POLICY_RC_D = "/usr/sbin/policy-rc.d"
WORK_ROOT = "/var/tmp/check_email_roundtrip-monitoring"
INSTALL_LOG = os.path.join(WORK_ROOT, "apt.log")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mailstack import IMAPS_PORT, SUBMISSIONS_PORT  # noqa: E402
from mailstack.procs import descendants as _descendants  # noqa: E402
from mailstack.procs import proc_alive as _proc_alive  # noqa: E402
from mailstack.procs import proc_cmdline as _proc_cmdline  # noqa: E402
from mailstack.procs import proc_stat as _proc_stat  # noqa: E402
from mailstack.procs import read_pidfile as _read_pidfile  # noqa: E402
from mailstack.procs import tail as _tail  # noqa: E402


class MonitoringError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
def _run(cmd, env=None, timeout=120):
    """(returncode, stdout+stderr); never writes to our own stdout/stderr."""
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, timeout=timeout,
                         universal_newlines=True)
    return res.returncode, res.stdout


def _write(path, text, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _workdir(prefix):
    os.makedirs(WORK_ROOT, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=WORK_ROOT)


def _kill_tree(roots, timeout=STOP_TIMEOUT, reap=None):
    """SIGTERM to roots, wait for them and all their descendants, SIGKILL the
    rest.  Returns the pids still alive at the end."""
    procs = []
    for root in dict.fromkeys(roots):
        for p in [root] + _descendants(root):
            st = _proc_stat(p)
            if st and (p, st[2]) not in procs:
                procs.append((p, st[2]))
    for root in dict.fromkeys(roots):
        try:
            os.kill(root, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_proc_alive(p, t) for p, t in procs):
        if reap:
            reap()
        time.sleep(0.05)
    for p, t in procs:
        if _proc_alive(p, t):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    if reap:
        reap()
    end = time.monotonic() + 5
    while time.monotonic() < end and any(_proc_alive(p, t) for p, t in procs):
        time.sleep(0.05)
    return [p for p, t in procs if _proc_alive(p, t)]


def reap_stale_instances():
    """Stop and remove Icinga2Instance leftovers of test sessions that died
    without their teardown (e.g. pytest killed with SIGKILL).

    Each instance directory records the pid of the process that started it
    (file "owner"); only instances whose owner is gone are touched, so a
    concurrent test session's daemon is left alone.  The daemon is found by
    its pid file, and only killed if its command line names that directory.
    """
    if not os.path.isdir(WORK_ROOT):
        return []
    reaped = []
    for name in os.listdir(WORK_ROOT):
        base = os.path.join(WORK_ROOT, name)
        if not name.startswith("icinga2-") or not os.path.isdir(base):
            continue
        owner = _read_pidfile(os.path.join(base, "owner"))
        if owner and _proc_alive(owner):
            continue
        pid = _read_pidfile(os.path.join(base, "run", "icinga2.pid"))
        if pid and _proc_alive(pid) and any(base + "/" in arg for arg in _proc_cmdline(pid)):
            if _kill_tree([pid]):
                continue        # still alive: leave its directory
            reaped.append(pid)
        shutil.rmtree(base, ignore_errors=True)
    return reaped


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def icinga_string(value):
    """A Python str as an Icinga 2 DSL string literal."""
    return json.dumps(str(value))


# --------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------
def missing_packages(pkgs=PACKAGES):
    rc, out = _run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"] + list(pkgs))
    ok = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            ok.add(parts[0].split(":")[0])
    return [p for p in pkgs if p not in ok]


def ensure_packages(pkgs=PACKAGES):
    """Install what is missing; returns (installed package names, seconds).

    No daemon is started: a policy-rc.d that denies every start is put in
    place for the install when there is none (an existing one, e.g. Docker's,
    is left alone).  --no-install-recommends keeps it to icinga2-bin,
    icinga2-common, nagios4-core/-common and their dependencies (boost
    libraries, monitoring-plugins-basic, bsd-mailx).
    """
    missing = missing_packages(pkgs)
    if not missing:
        return [], 0.0
    started = time.monotonic()
    os.makedirs(WORK_ROOT, exist_ok=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", APT_LISTCHANGES_FRONTEND="none")
    created_policy = False
    if not os.path.exists(POLICY_RC_D):
        with open(POLICY_RC_D, "w") as fh:
            fh.write("#!/bin/sh\n# temporary, by tests/monitoring.py\nexit 101\n")
        os.chmod(POLICY_RC_D, 0o755)
        created_policy = True
    log = []
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                   "-o", "Dpkg::Options::=--force-confdef",
                   "-o", "Dpkg::Options::=--force-confold"] + missing
        lists = "/var/lib/apt/lists"
        have_lists = os.path.isdir(lists) and any(
            n.endswith("Packages") or "Packages." in n for n in os.listdir(lists))
        if not have_lists:
            log.append(_run(["apt-get", "update", "-q"], env=env, timeout=600))
        rc, out = _run(install, env=env, timeout=900)
        log.append((rc, out))
        if rc != 0:     # stale package lists: refresh once and retry
            log.append(_run(["apt-get", "update", "-q"], env=env, timeout=600))
            log.append(_run(install, env=env, timeout=900))
    finally:
        if created_policy:
            os.unlink(POLICY_RC_D)
        with open(INSTALL_LOG, "a") as fh:
            for rc, out in log:
                fh.write("--- rc=%d\n%s\n" % (rc, out))
    still = missing_packages(pkgs)
    if still:
        raise MonitoringError("packages still missing after apt-get install: %s\n%s"
                              % (" ".join(still), log[-1][1][-4000:] if log else ""))
    return missing, time.monotonic() - started


# --------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------
def _is_pyenv_shim(path):
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return b"pyenv" in head and head.startswith(b"#!")


def plugin_path():
    """The real check_email_roundtrip executable (absolute).

    shutil.which() first.  A pyenv shim (a bash script re-resolving the
    Python version from the environment and the working directory at every
    call) is not what a monitoring system should execute: then the console
    script next to the running interpreter is taken, else `pyenv which`.
    """
    found = shutil.which(PLUGIN)
    if found and not _is_pyenv_shim(found):
        return os.path.abspath(found)
    beside = os.path.join(os.path.dirname(sys.executable), PLUGIN)
    if os.access(beside, os.X_OK):
        return beside
    if found:
        rc, out = _run(["pyenv", "which", PLUGIN])
        if rc == 0 and out.strip() and os.access(out.strip().splitlines()[-1], os.X_OK):
            return out.strip().splitlines()[-1]
    raise MonitoringError("%s is not installed (pip install %s)" % (PLUGIN, REPO))


def plugin_dir():
    return os.path.dirname(plugin_path())


# --------------------------------------------------------------------------
# Icinga 2
# --------------------------------------------------------------------------
def _icinga2_layout(base):
    """The private directory tree and the --define arguments that point to it."""
    dirs = {name: os.path.join(base, sub) for name, sub in (
        ("ConfigDir", "etc"), ("DataDir", "lib"), ("LogDir", "log"), ("CacheDir", "cache"),
        ("SpoolDir", "spool"), ("InitRunDir", "run"))}
    for path in dirs.values():
        os.makedirs(path, mode=0o750, exist_ok=True)
    defines = dict(dirs)
    defines.update({
        "RunAsUser": "root",
        "RunAsGroup": "root",
        "PluginDir": NAGIOS_PLUGIN_DIR,
        "PluginContribDir": plugin_dir(),
        "ManubulonPluginDir": NAGIOS_PLUGIN_DIR,
    })
    return dirs, defines


def _define_args(defines):
    args = []
    for key, value in defines.items():
        args += ["--define", "%s=%s" % (key, value)]
    return args


def _config_parts(config_text_or_paths):
    """A str is configuration text; a path (or a list/tuple of them) is included."""
    if isinstance(config_text_or_paths, (list, tuple)):
        items = list(config_text_or_paths)
    else:
        items = [config_text_or_paths]
    parts = []
    for item in items:
        item = os.fspath(item)
        if "\n" not in item and os.path.isfile(item):
            parts.append("include %s\n" % icinga_string(os.path.abspath(item)))
        else:
            parts.append(item if item.endswith("\n") else item + "\n")
    return "".join(parts)


PRELUDE = """\
// written by tests/monitoring.py; every path is private (see --define)
include <itl>
include <plugins>
include <plugins-contrib>
"""


def icinga2_validate(config_text_or_paths, keep_dir=False):
    """Run `icinga2 daemon -C` on a private configuration.

    config_text_or_paths: configuration text, a file path, or a list of both
    (paths are `include`d).  The ITL, <plugins> and <plugins-contrib> are
    included first; PluginContribDir is the directory of the installed
    check_email_roundtrip.  Returns (returncode, output).
    """
    ensure_packages()
    base = _workdir("validate-")
    try:
        dirs, defines = _icinga2_layout(base)
        conf = os.path.join(dirs["ConfigDir"], "icinga2.conf")
        _write(conf, PRELUDE + _config_parts(config_text_or_paths))
        cmd = [ICINGA2, "daemon", "-C", "-c", conf] + _define_args(defines)
        rc, out = _run(cmd, timeout=120)
        return rc, "$ %s\n%s" % (" ".join(cmd), out)
    finally:
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


def critical_lines(output):
    return [line for line in output.splitlines() if "critical/" in line]


class Icinga2Instance:
    """A private Icinga 2 daemon running check_email_roundtrip.

        with Icinga2Instance(stack) as icinga:
            result = icinga.check_now()          # dict: state, output, ...

    One Host (check_command "dummy": no ping), one Service with the
    CheckCommand "email_roundtrip" from command_conf and vars for the
    loopback mail stack (implicit TLS SUBMISSIONS_PORT/IMAPS_PORT, --ca-file, probe user,
    password file), the REST API on 127.0.0.1:<free port> with an ApiUser
    and a random password.  Its directory is under WORK_ROOT; it logs to
    files there (icinga2.log, stdout.log, error.log), its pid file is
    run/icinga2.pid, and stop() ends it by that pid (SIGTERM, then SIGKILL
    for whatever of its process tree is left).
    """

    HOST = "mailstack"
    SERVICE = "email-roundtrip"
    API_USER = "cer-test"

    def __init__(self, stack, command_conf=COMMAND_CONF, extra_config="", service_vars=None,
                 check_interval=300, keep_dir=False):
        self.stack = stack
        self.command_conf = command_conf
        self.extra_config = extra_config
        self.service_vars = dict(service_vars or {})
        self.check_interval = check_interval
        self.keep_dir = keep_dir
        self.base = None
        self.proc = None
        self.port = None
        self.password = secrets.token_urlsafe(18)
        self.node_name = "cer-icinga2-test"
        self.dirs = {}
        self.defines = {}

    # -- paths -------------------------------------------------------------
    @property
    def pidfile(self):
        return os.path.join(self.dirs["InitRunDir"], "icinga2.pid")

    @property
    def log(self):
        return os.path.join(self.dirs["LogDir"], "icinga2.log")

    @property
    def stdout_log(self):
        return os.path.join(self.dirs["LogDir"], "stdout.log")

    @property
    def error_log(self):
        return os.path.join(self.dirs["LogDir"], "error.log")

    @property
    def config(self):
        return os.path.join(self.dirs["ConfigDir"], "icinga2.conf")

    @property
    def ca_cert(self):
        return os.path.join(self.dirs["DataDir"], "certs", "ca.crt")

    def logs(self, n=60):
        return "--- %s\n%s--- %s\n%s--- %s\n%s" % (
            self.log, _tail(self.log, n), self.stdout_log, _tail(self.stdout_log, n),
            self.error_log, _tail(self.error_log, n))

    # -- configuration -----------------------------------------------------
    def default_service_vars(self):
        stack = self.stack
        return {
            "email_roundtrip_hostname": "localhost",
            "email_roundtrip_ca_file": stack.ca,
            "email_roundtrip_smtp_port": SUBMISSIONS_PORT,
            "email_roundtrip_smtp_security": "tls",
            "email_roundtrip_imap_port": IMAPS_PORT,
            "email_roundtrip_imap_security": "tls",
            "email_roundtrip_smtp_user": stack.address("probe"),
            "email_roundtrip_smtp_password_file": stack.password_file("probe"),
        }

    def _make_certs(self):
        """A self-signed certificate for NodeName that is also the CA (openssl)."""
        certs = os.path.join(self.dirs["DataDir"], "certs")
        os.makedirs(certs, mode=0o700, exist_ok=True)
        key = os.path.join(certs, self.node_name + ".key")
        crt = os.path.join(certs, self.node_name + ".crt")
        rc, out = _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                        "-days", "30", "-subj", "/CN=" + self.node_name,
                        "-addext", "basicConstraints=critical,CA:TRUE",
                        "-keyout", key, "-out", crt])
        if rc != 0:
            raise MonitoringError("openssl req failed:\n" + out)
        os.chmod(key, 0o600)
        shutil.copyfile(crt, self.ca_cert)

    def render_config(self):
        variables = self.default_service_vars()
        variables.update(self.service_vars)
        var_lines = "".join("  vars.%s = %s\n" % (k, json.dumps(v)) for k, v in variables.items())
        return "".join([
            PRELUDE,
            "const NodeName = %s\n" % icinga_string(self.node_name),
            "const ZoneName = NodeName\n",
            "const TicketSalt = \"\"\n",
            "object Endpoint NodeName { }\n",
            "object Zone ZoneName { endpoints = [ NodeName ] }\n",
            "object FileLogger \"main-log\" {\n  severity = \"notice\"\n"
            "  path = LogDir + \"/icinga2.log\"\n}\n",
            "object CheckerComponent \"checker\" { }\n",
            "object ApiListener \"api\" {\n  bind_host = \"127.0.0.1\"\n  bind_port = %d\n"
            "  accept_config = false\n  accept_commands = false\n}\n" % self.port,
            "object ApiUser %s {\n  password = %s\n  permissions = [ \"*\" ]\n}\n"
            % (icinga_string(self.API_USER), icinga_string(self.password)),
            _config_parts(self.command_conf) if self.command_conf else "",
            self.extra_config + "\n" if self.extra_config else "",
            "object Host %s {\n  check_command = \"dummy\"\n  address = \"127.0.0.1\"\n"
            "  vars.dummy_state = 0\n  vars.dummy_text = \"loopback mail stack\"\n"
            "  enable_active_checks = false\n}\n" % icinga_string(self.HOST),
            "object Service %s {\n  host_name = %s\n  check_command = \"email_roundtrip\"\n"
            "  check_interval = %ds\n  retry_interval = %ds\n  max_check_attempts = 1\n"
            "  enable_notifications = false\n%s}\n"
            % (icinga_string(self.SERVICE), icinga_string(self.HOST), self.check_interval,
               self.check_interval, var_lines),
        ])

    # -- life cycle --------------------------------------------------------
    def start(self):
        ensure_packages()
        reap_stale_instances()
        self.base = _workdir("icinga2-")
        _write(os.path.join(self.base, "owner"), "%d\n" % os.getpid())
        self.dirs, self.defines = _icinga2_layout(self.base)
        self.port = _free_port()
        self._make_certs()
        _write(self.config, self.render_config(), 0o600)
        state_home = os.path.join(self.base, "plugin-state")
        os.makedirs(state_home, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CHECK_EMAIL_ROUNDTRIP_")}
        env["XDG_STATE_HOME"] = state_home
        base_cmd = [ICINGA2, "daemon", "-c", self.config] + _define_args(self.defines)
        rc, out = _run(base_cmd[:2] + ["-C"] + base_cmd[2:], env=env)
        if rc != 0:
            raise MonitoringError("icinga2 daemon -C failed (rc=%d):\n%s" % (rc, out))
        cmd = base_cmd + ["--close-stdio", "-e", self.error_log]
        with open(self.stdout_log, "a") as out_fh:
            out_fh.write("$ %s\n" % " ".join(cmd))
            out_fh.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_fh,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.base,
                                         start_new_session=True, close_fds=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MonitoringError("icinga2 exited with %s at start\n%s"
                                      % (self.proc.returncode, self.logs()))
            if _read_pidfile(self.pidfile):
                try:
                    status = self.api("GET", "/v1/status/IcingaApplication")
                    if status.get("results"):
                        return
                except (OSError, MonitoringError, ValueError) as exc:
                    last = exc
            time.sleep(0.2)
        raise MonitoringError("icinga2 API not ready within %.0fs (%s)\n%s"
                              % (timeout, last, self.logs()))

    def pid(self):
        pid = _read_pidfile(self.pidfile) if self.dirs else None
        if pid and _proc_alive(pid):
            return pid
        return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM to the pid in the pid file (and our child), SIGKILL leftovers.
        Returns the pids still alive (none, normally); the instance directory
        is removed unless keep_dir."""
        roots = [p for p in (self.pid(), self.proc.pid if self.proc else None) if p]
        reap = self.proc.poll if self.proc is not None else None   # no zombie child
        left = _kill_tree(roots, timeout, reap) if roots else []
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.dirs and os.path.exists(self.pidfile):
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass
        if not self.keep_dir and self.base and not left:
            shutil.rmtree(self.base, ignore_errors=True)
        return left

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- REST API ----------------------------------------------------------
    def api(self, method, path, body=None, timeout=10):
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        ctx.check_hostname = False      # the certificate names NodeName, we dial 127.0.0.1
        url = "https://127.0.0.1:%d%s" % (self.port, path)
        data = json.dumps(body).encode() if body is not None else None
        auth = base64.b64encode(("%s:%s" % (self.API_USER, self.password)).encode()).decode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/json", "Content-Type": "application/json",
            "Authorization": "Basic " + auth})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            raise MonitoringError("%s %s: HTTP %d %s" % (method, path, exc.code,
                                                         exc.read().decode(errors="replace")))

    def service(self, name=None, attrs=("last_check_result", "state", "last_check", "next_check")):
        """The attrs of service `name` (default: ours) from /v1/objects/services."""
        name = name or self.SERVICE
        query = urllib.parse.urlencode([("attrs", a) for a in attrs])
        full = "%s!%s" % (self.HOST, name)
        path = "/v1/objects/services/%s?%s" % (urllib.parse.quote(full, safe=""), query)
        results = self.api("GET", path)["results"]
        if not results:
            raise MonitoringError("service %s not found" % full)
        return results[0]["attrs"]

    def reschedule(self, name=None):
        """POST /v1/actions/reschedule-check (force, now) for service `name`."""
        return self.api("POST", "/v1/actions/reschedule-check", {
            "type": "Service",
            "filter": "host.name == h && service.name == s",
            "filter_vars": {"h": self.HOST, "s": name or self.SERVICE},
            "force": True, "next_check": time.time()})

    def wait_for_result(self, name=None, since=0.0, timeout=60.0):
        """The first last_check_result of service `name` that ended after `since`
        (a time.time()), as a dict: state, exit_status, output, performance_data,
        command, execution_start, execution_end, check_source."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise MonitoringError("icinga2 exited with %s\n%s"
                                      % (self.proc.returncode, self.logs()))
            result = self.service(name).get("last_check_result")
            if result and result.get("execution_end", 0) >= since:
                return {key: result.get(key) for key in (
                    "state", "exit_status", "output", "performance_data", "command",
                    "execution_start", "execution_end", "check_source")}
            time.sleep(0.2)
        raise MonitoringError("no check result within %.0fs\n%s" % (timeout, self.logs()))

    def check_now(self, name=None, timeout=60.0):
        """Force a check of service `name` (default: ours) and return its result."""
        since = time.time()
        self.reschedule(name)
        return self.wait_for_result(name, since=since, timeout=timeout)


# --------------------------------------------------------------------------
# Nagios 4
# --------------------------------------------------------------------------
NAGIOS_OBJECTS = """\
define timeperiod {
    timeperiod_name         24x7
    alias                   always
    sunday                  00:00-24:00
    monday                  00:00-24:00
    tuesday                 00:00-24:00
    wednesday               00:00-24:00
    thursday                00:00-24:00
    friday                  00:00-24:00
    saturday                00:00-24:00
}
define command {
    command_name            notify-nobody
    command_line            /bin/true
}
define command {
    command_name            check-host-ok
    command_line            /bin/true
}
define contact {
    contact_name                    nagiosadmin
    alias                           admin
    service_notification_period     24x7
    host_notification_period        24x7
    service_notification_options    w,u,c,r
    host_notification_options       d,u,r
    service_notification_commands   notify-nobody
    host_notification_commands      notify-nobody
    email                           root@localhost
}
define contactgroup {
    contactgroup_name       admins
    alias                   admins
    members                 nagiosadmin
}
define service {
    name                    generic-service
    register                0
    max_check_attempts      3
    check_interval          10
    retry_interval          2
    check_period            24x7
    notification_interval   60
    notification_period     24x7
    contact_groups          admins
}
define host {
    name                    generic-host
    register                0
    max_check_attempts      3
    check_period            24x7
    check_command           check-host-ok
    notification_interval   60
    notification_period     24x7
    contact_groups          admins
}
"""

NAGIOS_CFG = """\
# written by tests/monitoring.py; every path is private
log_file={d}/nagios.log
cfg_file={d}/objects.cfg
cfg_file={d}/command.cfg
resource_file={d}/resource.cfg
object_cache_file={d}/objects.cache
precached_object_file={d}/objects.precache
status_file={d}/status.dat
state_retention_file={d}/retention.dat
retain_state_information=0
temp_file={d}/nagios.tmp
temp_path={d}/tmp
check_result_path={d}/checkresults
lock_file={d}/nagios.lock
command_file={d}/nagios.cmd
check_external_commands=0
log_archive_path={d}/archives
debug_file={d}/nagios.debug
nagios_user=root
nagios_group=root
enable_notifications=0
illegal_macro_output_chars=`~$&|'"<>
"""


def nagios4_verify(command_definition_text, host_names=("mail.example.com",), keep_dir=False):
    """`nagios4 -v` on a private nagios.cfg around the given definitions.

    command_definition_text: `define command {...}` (and optionally `define
    service {...}`) text.  The rest is here: a 24x7 timeperiod, a contact and
    contact group, the templates generic-service/generic-host, one host per
    host_names (plus every host_name the text's services use), and, when the
    text defines no service, one service using its first command.
    $USER1$ is the directory of the installed plugin.  Returns (rc, output).
    """
    ensure_packages()
    base = _workdir("nagios4-")
    try:
        for sub in ("tmp", "checkresults", "archives"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        text = command_definition_text
        hosts = list(host_names)
        for name in re.findall(r"^\s*host_name\s+(\S+)", text, re.M):
            hosts.extend(h.strip() for h in name.split(",") if h.strip())
        objects = NAGIOS_OBJECTS
        for host in dict.fromkeys(hosts):
            objects += ("define host {\n    use generic-host\n    host_name %s\n"
                        "    alias %s\n    address 127.0.0.1\n}\n" % (host, host))
        if not re.search(r"define\s+service\s*\{", text):
            commands = re.findall(r"^\s*command_name\s+(\S+)", text, re.M)
            if not commands:
                raise MonitoringError("no command_name in:\n" + text)
            objects += ("define service {\n    use generic-service\n    host_name %s\n"
                        "    service_description email round trip\n"
                        "    check_command %s!probe@example.com!/dev/null!60!300\n}\n"
                        % (hosts[0], commands[0]))
        _write(os.path.join(base, "objects.cfg"), objects)
        _write(os.path.join(base, "command.cfg"), text if text.endswith("\n") else text + "\n")
        _write(os.path.join(base, "resource.cfg"), "$USER1$=%s\n" % plugin_dir())
        cfg = os.path.join(base, "nagios.cfg")
        _write(cfg, NAGIOS_CFG.format(d=base))
        cmd = [NAGIOS4, "-v", cfg]
        rc, out = _run(cmd, timeout=60)
        return rc, "$ %s\n%s" % (" ".join(cmd), out)
    finally:
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


def readme_nagios_blocks(readme=README, section="Install"):
    """The `define command {...}` and `define service {...}` blocks of a section."""
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(r"^## %s\s*$(.*?)(?=^## |\Z)" % re.escape(section), text, re.M | re.S)
    if not match:
        raise MonitoringError("README has no section %r" % section)
    body = match.group(1)
    blocks = re.findall(r"^[ \t]*define\s+(?:command|service)\s*\{.*?^[ \t]*\}", body, re.M | re.S)
    return blocks
