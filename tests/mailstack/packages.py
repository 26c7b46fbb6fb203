"""Debian packages: which are missing, and installing them without starting
any daemon.  Shared by the mail stack and the monitoring systems."""

import os
import subprocess

from .system import StackError, run

POLICY_RC_D = "/usr/sbin/policy-rc.d"
APT_LISTS = "/var/lib/apt/lists"


def missing_packages(packages):
    """The names among packages that dpkg does not list as installed."""
    res = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *packages], check=False)
    installed = set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            installed.add(parts[0].split(":")[0])
    return [name for name in packages if name not in installed]


def install_packages(packages, preseed=(), log=None, owner="tests/mailstack", announce=None):
    """apt-get install what is missing of packages (--no-install-recommends);
    returns the names installed.  preseed: debconf-set-selections lines, set
    first.  No daemon is started: a policy-rc.d that denies every start is
    put in place for the install when there is none (an existing one, e.g.
    Docker's, is left alone).  Stale package lists are refreshed once.
    apt's output is appended to log when given; announce(text) is told
    what is about to be installed."""
    missing = missing_packages(packages)
    if not missing:
        return []
    if announce:
        announce(f"installing {' '.join(missing)}")
    if preseed:
        subprocess.run(["debconf-set-selections"], input="\n".join(preseed) + "\n", text=True,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", APT_LISTCHANGES_FRONTEND="none")
    created_policy = False
    if not os.path.exists(POLICY_RC_D):
        with open(POLICY_RC_D, "w") as fh:
            fh.write(f"#!/bin/sh\n# temporary, by {owner}\nexit 101\n")
        os.chmod(POLICY_RC_D, 0o755)
        created_policy = True
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
               "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
               *missing]
    try:
        have_lists = os.path.isdir(APT_LISTS) and any(
            name.endswith("Packages") or "Packages." in name for name in os.listdir(APT_LISTS))
        if not have_lists:
            run(["apt-get", "update", "-q"], env=env, log=log)
        if run(install, check=False, env=env, timeout=900, log=log).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, log=log)
            run(install, env=env, timeout=900, log=log)
    finally:
        if created_policy:
            os.unlink(POLICY_RC_D)
    still = missing_packages(packages)
    if still:
        raise StackError(f"packages still missing after apt-get install: {' '.join(still)}")
    return missing
