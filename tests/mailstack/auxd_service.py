"""auxd as a service of the stack: its configuration, its copy, its life cycle.

The daemon is auxd.py next to this file (greylisting policy, expired-
certificate IMAPS front, the TLS-1.0-only fronts for SMTP and IMAP).  The
stack runs a copy in DIR/aux with the system's python3: a changed auxd.py
is then a changed file like any configuration, and the daemon is restarted
at the next up.
"""

import json
import os
import pathlib
import sys

from . import auxd, endpoints
from .certvariants import TLS10_VARIANT
from .config import (
    GREYLIST_POLICY_PORT,
    HOST,
    IMAP_PORT,
    IMAPS_EXPIRED_PORT,
    IMAPS_TLS10_PORT,
    MX_PORT,
    SUBMISSIONS_TLS10_PORT,
)
from .faults import GREYLIST_ACTION, GREYLIST_DEFAULT_SECONDS, GREYLIST_STALE_SECONDS
from .procs import proc_cmdline
from .service import Service
from .system import make_dir, write_file

SOURCE = pathlib.Path(auxd.__file__)


class Auxd(Service):
    name = "auxd"
    packages = ()

    def __init__(self, stack):
        super().__init__(stack)
        self.conf_dir = os.path.join(stack.dir, "aux")
        self.script = os.path.join(self.conf_dir, "auxd.py")
        self.conf = os.path.join(self.conf_dir, "auxd.json")
        self.seconds_file = os.path.join(self.conf_dir, "greylist-seconds")

    def pidfile(self):
        return os.path.join(self.conf_dir, "auxd.pid")

    def matches(self, pid):
        cmd = proc_cmdline(pid)
        return self.script in cmd and self.conf in cmd

    def endpoints(self):
        return [endpoints.tcp(HOST, GREYLIST_POLICY_PORT), endpoints.tcp(HOST, IMAPS_EXPIRED_PORT),
                endpoints.tcp(HOST, SUBMISSIONS_TLS10_PORT), endpoints.tcp(HOST, IMAPS_TLS10_PORT)]

    def certificate_files(self):
        """The TLS 1.0 fronts' certificate, read at start: a new one needs a restart."""
        return [self.stack.cert_factory.cert_file(TLS10_VARIANT)]

    def fronts(self):
        """auxd's TLS fronts: name, port, certificate, backend, TLS version."""
        s, factory = self.stack, self.stack.cert_factory
        tls10 = {"host": HOST, "cert": factory.cert_file(TLS10_VARIANT),
                 "key": factory.key_file(TLS10_VARIANT), "tls_version": "TLSv1"}
        return [
            {"name": "imaps-expired", "host": HOST, "port": IMAPS_EXPIRED_PORT, "backend": [HOST, IMAP_PORT],
             "cert": s.expired_cert, "key": s.expired_key, "tls_version": None},
            dict(tls10, name="smtps-tls10", port=SUBMISSIONS_TLS10_PORT, backend=[HOST, MX_PORT]),
            dict(tls10, name="imaps-tls10", port=IMAPS_TLS10_PORT, backend=[HOST, IMAP_PORT]),
        ]

    def info(self):
        return {"script": self.script, "config": self.conf, "log": self.log,
                "greylist_policy": f"inet:{HOST}:{GREYLIST_POLICY_PORT}",
                "greylist_seconds_file": self.seconds_file,
                "imaps_expired_port": IMAPS_EXPIRED_PORT,
                "imaps_expired_backend": f"{HOST}:{IMAP_PORT}",
                "tls_fronts": {f["name"]: {"address": f"{f['host']}:{f['port']}",
                                           "backend": f"{f['backend'][0]}:{f['backend'][1]}",
                                           "cert": f["cert"], "tls_version": f["tls_version"] or "TLSv1.2+"}
                               for f in self.fronts()}}

    @staticmethod
    def python():
        """The system's python3: auxd needs nothing else, and a virtualenv's
        interpreter may live where the daemon's user cannot read."""
        return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

    def write_config(self):
        make_dir(self.conf_dir, 0o755)
        if not os.path.exists(self.seconds_file):
            write_file(self.seconds_file, f"{GREYLIST_DEFAULT_SECONDS:g}\n", 0o644)
        cfg = {"host": HOST, "greylist_port": GREYLIST_POLICY_PORT,
               "greylist_seconds_file": self.seconds_file,
               "greylist_default_seconds": GREYLIST_DEFAULT_SECONDS,
               "greylist_stale_seconds": GREYLIST_STALE_SECONDS,
               "greylist_action": GREYLIST_ACTION,
               "fronts": self.fronts(),
               "pidfile": self.pidfile(), "log": self.log, "user": "nobody"}
        changed = write_file(self.script, SOURCE.read_bytes(), 0o755)
        changed |= write_file(self.conf, json.dumps(cfg, indent=1, sort_keys=True) + "\n", 0o644)
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self.spawn([self.python(), self.script, self.conf])

    def reload(self):
        # the greylist table is in memory: a restart forgets it (short)
        self.restart()

    # -- the greylisting knob ------------------------------------------------
    def greylist_seconds(self):
        """N of the greylist knob (GREYLIST_DEFAULT_SECONDS unless set)."""
        return auxd.read_greylist_seconds(self.seconds_file, GREYLIST_DEFAULT_SECONDS)

    def set_greylist_seconds(self, seconds):
        if not 0 <= seconds <= 86400:
            raise ValueError(f"greylist seconds out of range: {seconds!r}")
        make_dir(self.conf_dir, 0o755)
        write_file(self.seconds_file, f"{seconds:g}\n", 0o644)
        return seconds
