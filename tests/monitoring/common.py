"""What the Icinga 2 and Nagios 4 harnesses share: paths, packages, the
installed plugin, commands, private work directories."""

import importlib.util
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import time

from mailstack.packages import install_packages, missing_packages
from mailstack.procs import kill_tree, proc_alive, proc_cmdline, read_pidfile
from mailstack.system import StackError, render_file, run

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
TEMPLATES = pathlib.Path(HERE) / "templates"
ICINGA_TEMPLATES_DIR = os.path.join(REPO, "icinga2-templates")
ZABBIX_TEMPLATES_DIR = os.path.join(REPO, "zabbix-templates")
COMMAND_CONF = os.path.join(ICINGA_TEMPLATES_DIR, "email_roundtrip.conf")
# where the Debian package (debian/) installs it: `include <plugins-contrib>`
# reads plugins-contrib.d recursively
ITL_COMMAND_CONF = "/usr/share/icinga2/include/plugins-contrib.d/email_roundtrip.conf"
SERVICES_CONF = os.path.join(ICINGA_TEMPLATES_DIR, "services.conf")
README = os.path.join(REPO, "README.md")

PLUGIN = "check_email_roundtrip"
PACKAGES = ("icinga2-bin", "icinga2-common", "nagios4-core", "openssl")
WORK_ROOT = "/var/tmp/check_email_roundtrip-monitoring"
INSTALL_LOG = os.path.join(WORK_ROOT, "apt.log")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class MonitoringError(RuntimeError):
    pass


def command_conf_files():
    """What to include for the CheckCommand "email_roundtrip": the repository's
    email_roundtrip.conf, unless the Debian package has put it into the ITL.
    Then <plugins-contrib> defines it already (a second definition is an
    error), and that copy must be the repository's, byte for byte."""
    try:
        with open(ITL_COMMAND_CONF, "rb") as fh:
            installed = fh.read()
    except FileNotFoundError:
        return [COMMAND_CONF]
    with open(COMMAND_CONF, "rb") as fh:
        if fh.read() != installed:
            raise MonitoringError(f"{ITL_COMMAND_CONF} (installed by the Debian package) is not "
                                  f"{COMMAND_CONF}: rebuild and reinstall the package, or remove it")
    return []


def run_command(cmd, env=None, timeout=120):
    """(returncode, stdout+stderr); never writes to our own stdout/stderr."""
    res = run(cmd, check=False, env=env, timeout=timeout)
    return res.returncode, res.stdout


def load_script(path, name):
    """A script of the repository (a template generator) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_text(path, text, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def render(template, **values):
    """A template of ours (a path under templates/) filled with values."""
    return render_file(TEMPLATES / template, values)


def workdir(prefix):
    """A new private directory under WORK_ROOT."""
    os.makedirs(WORK_ROOT, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=WORK_ROOT)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_packages(pkgs=PACKAGES):
    """Install what is missing; returns (installed package names, seconds).

    No daemon is started (see mailstack.packages).  --no-install-recommends
    keeps it to icinga2-bin, icinga2-common, nagios4-core/-common and their
    dependencies (boost libraries, monitoring-plugins-basic, bsd-mailx);
    apt's output goes to INSTALL_LOG.
    """
    if not missing_packages(pkgs):
        return [], 0.0
    started = time.monotonic()
    os.makedirs(WORK_ROOT, exist_ok=True)
    try:
        installed = install_packages(pkgs, log=INSTALL_LOG, owner="tests/monitoring")
    except StackError as exc:
        raise MonitoringError(f"{exc} (apt's output: {INSTALL_LOG})") from None
    return installed, time.monotonic() - started


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
        rc, out = run_command(["pyenv", "which", PLUGIN])
        if rc == 0 and out.strip() and os.access(out.strip().splitlines()[-1], os.X_OK):
            return out.strip().splitlines()[-1]
    raise MonitoringError(f"{PLUGIN} is not installed (pip install {REPO})")


def plugin_dir():
    return os.path.dirname(plugin_path())


def reap_stale(prefix, pidfiles):
    """Stop and remove the instance directories under WORK_ROOT named
    prefix* that test sessions left when they died without their teardown
    (e.g. pytest killed with SIGKILL); returns the pids stopped.

    Each instance directory records the pid of the process that made it
    (file "owner"); only instances whose owner is gone are touched, so a
    concurrent test session's daemons are left alone.  The daemons are found
    by their pid files (pidfiles: paths inside the instance directory), and
    only killed if their command line names that directory.
    """
    if not os.path.isdir(WORK_ROOT):
        return []
    reaped = []
    for name in os.listdir(WORK_ROOT):
        base = os.path.join(WORK_ROOT, name)
        if not name.startswith(prefix) or not os.path.isdir(base):
            continue
        owner = read_pidfile(os.path.join(base, "owner"))
        if owner and proc_alive(owner):
            continue
        alive = []
        for pidfile in pidfiles:
            pid = read_pidfile(os.path.join(base, pidfile))
            if pid and proc_alive(pid) and any(base + "/" in arg for arg in proc_cmdline(pid)):
                alive.append(pid)
        if alive and kill_tree(alive, STOP_TIMEOUT):
            continue  # still alive: leave its directory
        reaped.extend(alive)
        shutil.rmtree(base, ignore_errors=True)
    return reaped
