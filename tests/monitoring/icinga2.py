"""Icinga 2, privately: `icinga2 daemon -C` on our own configuration, and a
daemon of our own with the REST API on 127.0.0.1 that runs the plugin.

Every path Icinga 2 uses (ConfigDir, DataDir, LogDir, CacheDir, SpoolDir,
InitRunDir and the pid, state, object-cache and vars files derived from
them) is redefined with `--define` to a directory of our own under WORK_ROOT.

Here Icinga 2 runs as root (`--define RunAsUser=root --define
RunAsGroup=root`): the plugin may be installed under /root (pip/pyenv, a 0700
directory), and the mail stack's password files are root's 0600 files.
Running as nagios would need copies of both; for a loopback test daemon that
is stopped again after the test, root is the honest choice.
"""

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from mailstack import IMAPS_PORT, SUBMISSIONS_PORT
from mailstack.procs import kill_tree, proc_alive, read_pidfile, tail

from .common import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    MonitoringError,
    command_conf_files,
    ensure_packages,
    free_port,
    plugin_dir,
    reap_stale,
    render,
    run_command,
    workdir,
    write_text,
)

ICINGA2 = "/usr/sbin/icinga2"
NAGIOS_PLUGIN_DIR = "/usr/lib/nagios/plugins"      # ITL PluginDir, monitoring-plugins


def icinga_string(value):
    """A Python str as an Icinga 2 DSL string literal."""
    return json.dumps(str(value))


def layout(base):
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


def define_args(defines):
    args = []
    for key, value in defines.items():
        args += ["--define", f"{key}={value}"]
    return args


def config_parts(config_text_or_paths):
    """A str is configuration text; a path (or a list/tuple of them) is included."""
    if isinstance(config_text_or_paths, (list, tuple)):
        items = list(config_text_or_paths)
    else:
        items = [config_text_or_paths]
    parts = []
    for item in items:
        item = os.fspath(item)
        if "\n" not in item and os.path.isfile(item):
            parts.append(f"include {icinga_string(os.path.abspath(item))}\n")
        else:
            parts.append(item if item.endswith("\n") else item + "\n")
    return "".join(parts)


def prelude():
    """The ITL, <plugins> and <plugins-contrib>, included first."""
    return render("icinga2/prelude.conf")


def icinga2_validate(config_text_or_paths, keep_dir=False):
    """Run `icinga2 daemon -C` on a private configuration.

    config_text_or_paths: configuration text, a file path, or a list of both
    (paths are `include`d).  The ITL, <plugins> and <plugins-contrib> are
    included first; PluginContribDir is the directory of the installed
    check_email_roundtrip.  Returns (returncode, output).
    """
    ensure_packages()
    base = workdir("validate-")
    try:
        dirs, defines = layout(base)
        conf = os.path.join(dirs["ConfigDir"], "icinga2.conf")
        write_text(conf, prelude() + config_parts(config_text_or_paths))
        cmd = [ICINGA2, "daemon", "-C", "-c", conf, *define_args(defines)]
        rc, out = run_command(cmd, timeout=120)
        return rc, f"$ {' '.join(cmd)}\n{out}"
    finally:
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


def critical_lines(output):
    return [line for line in output.splitlines() if "critical/" in line]


def reap_stale_instances():
    """Stop and remove Icinga2Instance leftovers of test sessions that died
    without their teardown (see common.reap_stale): the daemon is found by
    its pid file."""
    return reap_stale("icinga2-", ["run/icinga2.pid"])


class Icinga2Instance:
    """A private Icinga 2 daemon running check_email_roundtrip.

        with Icinga2Instance(stack) as icinga:
            result = icinga.check_now()          # dict: state, output, ...

    One Host (check_command "dummy": no ping), one Service with the
    CheckCommand "email_roundtrip" from command_conf (default:
    command_conf_files()) and vars for the
    loopback mail stack (implicit TLS on SUBMISSIONS_PORT and IMAPS_PORT,
    --ca-file, probe user, password file), the REST API on 127.0.0.1:<free
    port> with an ApiUser and a random password.  Its directory is under
    WORK_ROOT; it logs to files there (icinga2.log, stdout.log, error.log),
    its pid file is run/icinga2.pid, and stop() ends it by that pid (SIGTERM,
    then SIGKILL for whatever of its process tree is left).

    The plugin's memory file (--state-file default: $XDG_STATE_HOME) is kept
    in the instance directory: the daemon, and with it every check it runs,
    gets XDG_STATE_HOME=<instance>/plugin-state.
    """

    HOST = "mailstack"
    SERVICE = "email-roundtrip"
    API_USER = "cer-test"

    def __init__(self, stack, command_conf=None, extra_config="", service_vars=None,
                 check_interval=300, keep_dir=False):
        self.stack = stack
        self.command_conf = command_conf_files() if command_conf is None else command_conf
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
        return "".join(f"--- {path}\n{tail(path, n)}" for path in (self.log, self.stdout_log, self.error_log))

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
        rc, out = run_command(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
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
        return render(
            "icinga2/instance.conf", prelude=prelude(), node_name=icinga_string(self.node_name),
            port=self.port, api_user=icinga_string(self.API_USER),
            api_password=icinga_string(self.password),
            command_conf=config_parts(self.command_conf) if self.command_conf else "",
            extra_config=self.extra_config + "\n" if self.extra_config else "",
            host=icinga_string(self.HOST), service=icinga_string(self.SERVICE),
            check_interval=self.check_interval,
            vars="".join(f"  vars.{k} = {json.dumps(v)}\n" for k, v in variables.items()))

    # -- life cycle --------------------------------------------------------
    def start(self):
        ensure_packages()
        reap_stale_instances()
        self.base = workdir("icinga2-")
        write_text(os.path.join(self.base, "owner"), f"{os.getpid()}\n")
        self.dirs, self.defines = layout(self.base)
        self.port = free_port()
        self._make_certs()
        write_text(self.config, self.render_config(), 0o600)
        state_home = os.path.join(self.base, "plugin-state")
        os.makedirs(state_home, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHECK_EMAIL_ROUNDTRIP_")}
        env["XDG_STATE_HOME"] = state_home
        base_cmd = [ICINGA2, "daemon", "-c", self.config, *define_args(self.defines)]
        rc, out = run_command([*base_cmd[:2], "-C", *base_cmd[2:]], env=env)
        if rc != 0:
            raise MonitoringError(f"icinga2 daemon -C failed (rc={rc}):\n{out}")
        cmd = [*base_cmd, "--close-stdio", "-e", self.error_log]
        with open(self.stdout_log, "a") as out_fh:
            out_fh.write(f"$ {' '.join(cmd)}\n")
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
                raise MonitoringError(f"icinga2 exited with {self.proc.returncode} at start\n{self.logs()}")
            if read_pidfile(self.pidfile):
                try:
                    status = self.api("GET", "/v1/status/IcingaApplication")
                    if status.get("results"):
                        return
                except (OSError, MonitoringError, ValueError) as exc:
                    last = exc
            time.sleep(0.2)
        raise MonitoringError(f"icinga2 API not ready within {timeout:.0f}s ({last})\n{self.logs()}")

    def pid(self):
        pid = read_pidfile(self.pidfile) if self.dirs else None
        if pid and proc_alive(pid):
            return pid
        return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM to the pid in the pid file (and our child), SIGKILL leftovers.
        Returns the pids still alive (none, normally); the instance directory
        is removed unless keep_dir."""
        roots = [p for p in (self.pid(), self.proc.pid if self.proc else None) if p]
        reap = self.proc.poll if self.proc is not None else None   # no zombie child
        left = kill_tree(roots, timeout, reap) if roots else []
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
        url = f"https://127.0.0.1:{self.port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        auth = base64.b64encode(f"{self.API_USER}:{self.password}".encode()).decode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/json", "Content-Type": "application/json",
            "Authorization": "Basic " + auth})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            raise MonitoringError(
                f"{method} {path}: HTTP {exc.code} {exc.read().decode(errors='replace')}") from None

    def service(self, name=None, attrs=("last_check_result", "state", "last_check", "next_check")):
        """The attrs of service `name` (default: ours) from /v1/objects/services."""
        name = name or self.SERVICE
        query = urllib.parse.urlencode([("attrs", a) for a in attrs])
        full = f"{self.HOST}!{name}"
        path = f"/v1/objects/services/{urllib.parse.quote(full, safe='')}?{query}"
        results = self.api("GET", path)["results"]
        if not results:
            raise MonitoringError(f"service {full} not found")
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
                raise MonitoringError(f"icinga2 exited with {self.proc.returncode}\n{self.logs()}")
            result = self.service(name).get("last_check_result")
            if result and result.get("execution_end", 0) >= since:
                return {key: result.get(key) for key in (
                    "state", "exit_status", "output", "performance_data", "command",
                    "execution_start", "execution_end", "check_source")}
            time.sleep(0.2)
        raise MonitoringError(f"no check result within {timeout:.0f}s\n{self.logs()}")

    def check_now(self, name=None, timeout=60.0):
        """Force a check of service `name` (default: ours) and return its result."""
        since = time.time()
        self.reschedule(name)
        return self.wait_for_result(name, since=since, timeout=timeout)
