"""promtool, the Prometheus project's own checker of the text format.

Debian 12's ``prometheus`` package ships it (no smaller package does);
installed the way the mail stack installs its packages (no daemon started,
no recommends) the first time a test asks for it.
"""

import shutil
import subprocess

from mailstack.packages import install_packages

PACKAGE = "prometheus"


def ensure_promtool():
    if shutil.which("promtool") is None:
        install_packages([PACKAGE], owner="tests/promtool")
    path = shutil.which("promtool") or "/usr/bin/promtool"
    return path


def check_metrics(text):
    """promtool's verdict on a textfile: (ok, what it said).  It checks the
    syntax and lints names, units, HELP and TYPE, exiting non-zero on any
    problem."""
    done = subprocess.run(
        [ensure_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()
