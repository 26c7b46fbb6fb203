"""The Debian package on a monitoring host: built from debian/, installed by
apt with Debian's own libraries, run by an unprivileged user through
/usr/lib/nagios/plugins as Nagios and Icinga run it.

Marked installed_deb: .ci/run builds the package, installs it with apt, and
runs the whole suite on Debian's libraries with --installed-deb
(/usr/bin/python3, Debian's pytest, /usr/lib/nagios/plugins first on PATH).
Every other run deselects these tests; none is ever skipped.  Purging the
package is .ci/debian-package's last step: a run that uses the package
cannot test its removal.
"""

import json
import os
import pwd
import shutil
import stat
import subprocess
import time

import pytest
from conftest import DEPENDENCIES, PLUGIN, PluginRun, assert_state, library_versions
from mailstack import IMAPS_PORT, SUBMISSIONS_PORT
from test_packaging import DEBIAN_NAMES, ROOT, setup_cfg_floors

from check_email_roundtrip import __version__
from check_email_roundtrip.memory import default_state_file

pytestmark = pytest.mark.installed_deb

PACKAGE = "check-email-roundtrip"
INSTALLED = f"/usr/lib/nagios/plugins/{PLUGIN}"
ITL_CONF = "/usr/share/icinga2/include/plugins-contrib.d/email_roundtrip.conf"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The monitoring user of these tests: Debian's nagios user exists only with
# the nagios packages.  Created for this module, removed with its home after.
USER = "cer-probe"


def dpkg_query(*args):
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=True).stdout


def package_files(package):
    return set(dpkg_query("-L", package).splitlines())


def test_apt_installed_the_package_with_the_plugin_where_nagios_and_icinga_look():
    assert dpkg_query("-W", "-f=${db:Status-Abbrev}${Version}", PACKAGE) == f"ii {__version__}"
    for package in DEBIAN_NAMES.values():
        assert dpkg_query("-W", "-f=${db:Status-Abbrev}", package) == "ii ", package
    files = package_files(PACKAGE)
    assert INSTALLED in files and ITL_CONF in files
    assert not [path for path in files if path.startswith(("/usr/bin/", "/usr/local/", "/etc/"))], files
    info = os.stat(INSTALLED)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o755, 0, 0)
    with open(INSTALLED, encoding="utf-8") as fh:
        assert fh.readline() == "#!/usr/bin/python3\n"
    assert shutil.which(PLUGIN) == INSTALLED, "this run's PATH must have /usr/lib/nagios/plugins first"
    with open(ITL_CONF, "rb") as fh:
        assert fh.read() == (ROOT / "icinga2-templates" / "email_roundtrip.conf").read_bytes()


def test_the_tests_and_the_plugin_use_debians_libraries_at_setup_cfgs_floors():
    """This run tests with Debian's packages (files they own), in the test
    process and in the plugin's interpreter; and their versions are exactly
    setup.cfg's floors: the floors are the lower end that CI tests."""
    floors = setup_cfg_floors()
    runs = {
        "tests": library_versions(),
        "plugin": library_versions("/usr/bin/python3", cwd="/", env={"PATH": SYSTEM_PATH}),
    }
    for dist, _module in DEPENDENCIES:
        owned = package_files(DEBIAN_NAMES[dist])
        for where, found in runs.items():
            version, location = found["found"][dist]
            assert location in owned, f"{where}: {dist} from {location}, not from {DEBIAN_NAMES[dist]}"
            assert version == floors[dist], (
                f"setup.cfg says {dist}>={floors[dist]}, the lower end tested here is "
                f"{DEBIAN_NAMES[dist]} {version}: make it setup.cfg's floor and debian/control's"
            )
    version, location = runs["plugin"]["found"]["check_email_roundtrip"]
    assert (version, location in package_files(PACKAGE)) == (__version__, True), location


def _owned_outside(uid, home):
    """Paths owned by uid outside home, on / and the writable file systems
    mounted apart from it (a process's files are its user's)."""
    roots = ["/"] + [path for path in ("/tmp", "/var/tmp", "/dev/shm", "/run")
                     if os.path.isdir(path) and os.stat(path).st_dev != os.stat("/").st_dev]
    # files vanishing under find (other processes) make it exit 1: the list is what counts
    done = subprocess.run(["find", *roots, "-xdev", "-user", str(uid), "-print"],
                          capture_output=True, text=True, timeout=600)
    return {path for path in done.stdout.splitlines() if path != home and not path.startswith(home + "/")}


def _tree(directory):
    return {os.path.join(top, name) for top, dirs, files in os.walk(directory) for name in dirs + files}


@pytest.fixture(scope="module")
def probe_user(stack):
    """A fresh user with a home, as nagios or icinga is, with copies of the
    probe's password (its own, 0600) and of the stack's CA."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pass
    else:  # left by an interrupted run
        subprocess.run(["userdel", "--remove", USER], capture_output=True, check=True)
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/usr/sbin/nologin", USER],
                   capture_output=True, check=True)
    try:
        entry = pwd.getpwnam(USER)
        for source, name in ((stack.password_file("probe"), "probe.password"), (stack.ca, "ca.pem")):
            target = os.path.join(entry.pw_dir, name)
            shutil.copyfile(source, target)
            os.chown(target, entry.pw_uid, entry.pw_gid)
            os.chmod(target, 0o600)
        yield entry
    finally:
        subprocess.run(["userdel", "--remove", USER], capture_output=True, check=True)


def run_as(entry, *args):
    """The installed plugin by its full path, as the monitoring user, with the
    environment a service's User= gets and an unwritable working directory."""
    env = {"HOME": entry.pw_dir, "USER": USER, "LOGNAME": USER, "PATH": SYSTEM_PATH}
    started = time.monotonic()
    done = subprocess.run([INSTALLED, *args], user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                          cwd="/", env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    return PluginRun(list(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def test_an_unprivileged_user_runs_round_trips_keeping_its_state_in_its_home_only(stack, probe_user):
    home = probe_user.pw_dir
    address = stack.address("probe")
    args = ["-H", "localhost", "--ca-file", os.path.join(home, "ca.pem"),
            "--smtp-port", str(SUBMISSIONS_PORT), "--smtp-security", "tls",
            "--imap-port", str(IMAPS_PORT), "--imap-security", "tls",
            "--smtp-user", address, "--smtp-password-file", os.path.join(home, "probe.password")]
    home_before, outside_before = _tree(home), _owned_outside(probe_user.pw_uid, home)

    assert_state(run_as(probe_user, *args), 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    # --no-wait keeps this run's probe in the state file; the next run judges it from there
    first = run_as(probe_user, *args, "--no-wait")
    assert_state(first, 0, "OK", "EMAIL_ROUNDTRIP OK - first run: nothing earlier to judge")
    state_dir = os.path.join(home, ".local", "state", "check_email_roundtrip")
    state_file = os.path.join(state_dir, os.path.basename(default_state_file(address, "localhost", "INBOX")))
    with open(state_file, encoding="utf-8") as fh:
        assert len(json.load(fh)["pending"]) == 1
    judged = run_as(probe_user, *args, "--no-wait")
    assert_state(judged, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert judged.perfdata["pending"] == 1  # the second run's own probe

    created = _tree(home) - home_before
    assert state_file in created, created
    allowed = {os.path.join(home, ".local"), os.path.join(home, ".local", "state"), state_dir}
    assert not {path for path in created if path not in allowed and not path.startswith(state_dir + "/")}
    for path in {state_dir} | {p for p in created if p.startswith(state_dir + "/")}:
        info = os.lstat(path)
        assert info.st_uid == probe_user.pw_uid, path
        assert stat.S_IMODE(info.st_mode) == (0o700 if stat.S_ISDIR(info.st_mode) else 0o600), path
    assert _owned_outside(probe_user.pw_uid, home) - outside_before == set()
