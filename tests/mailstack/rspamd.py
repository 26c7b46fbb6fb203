"""rspamd as a milter: DKIM-signs authenticated submissions, verifies
SPF/DKIM/DMARC on the inbound MX pass and adds Authentication-Results.

Its own top-level config includes the packaged common.conf; the packaged
module files include $LOCAL_CONFDIR/local.d/<module>.conf, and LOCAL_CONFDIR,
DBDIR, RUNDIR and LOGDIR are redefined with --var to point into the stack
directory.  The templates under templates/rspamd/ mirror that layout.
"""

import os
import pwd

from . import endpoints
from .config import (
    AUTHSERV_ID,
    DKIM_SELECTOR,
    DNS_PORT,
    DOMAIN,
    HOST,
    RSPAMD_CONTROLLER_PORT,
    RSPAMD_MILTER_PORT,
    RSPAMD_START_TIMEOUT,
    RSPAMD_USER,
)
from .service import Service
from .system import make_dir, render, write_file

# local.d files written from the template of the same name
LOCAL_D = ("actions.conf", "spf.conf", "dkim.conf", "dmarc.conf", "dkim_signing.conf", "arc.conf",
           "milter_headers.conf")
# Modules that want the internet or Redis (or would slow every scan down
# with lookups that can only fail here): local.d/<module>.conf disables each.
RSPAMD_DISABLED_MODULES = (
    "rbl", "fuzzy_check", "asn", "phishing", "neural", "ratelimit", "greylist",
    "history_redis", "url_redirector", "replies", "reputation", "bimi", "multimap",
    "whitelist", "mx_check", "rspamd_update", "emails", "dcc", "antivirus",
    "external_services", "clickhouse", "elastic", "metadata_exporter",
    "metric_exporter", "p0f", "spamtrap", "aws_s3")


class Rspamd(Service):
    name = "rspamd"
    packages = ("rspamd",)
    ready_timeout = RSPAMD_START_TIMEOUT

    def __init__(self, stack):
        super().__init__(stack)
        self.root = os.path.join(stack.dir, "rspamd")
        self.conf = os.path.join(self.root, "rspamd.conf")
        self.local_d = os.path.join(self.root, "local.d")
        self.override_d = os.path.join(self.root, "override.d")
        self.db_dir = os.path.join(self.root, "db")
        # holds the control socket: keep it short (unix socket path limit)
        self.run_dir = os.path.join(stack.short_dir, "rspamd-run")

    def pidfile(self):
        return os.path.join(self.run_dir, "rspamd.pid")

    def matches(self, pid):
        # rspamd rewrites its command line ("rspamd: main process"), so
        # check the binary and that it holds our log file open.
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) != "rspamd":
                return False
            fd_dir = f"/proc/{pid}/fd"
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) in (self.log, self.log + " (deleted)"):
                        return True
                except OSError:
                    pass
        except OSError:
            pass
        return False

    def endpoints(self):
        return [endpoints.Endpoint("milter", HOST, RSPAMD_MILTER_PORT),
                endpoints.Endpoint("http", HOST, RSPAMD_CONTROLLER_PORT)]

    def info(self):
        return {"milter_port": RSPAMD_MILTER_PORT,
                "milter": f"inet:{HOST}:{RSPAMD_MILTER_PORT}",
                "controller_port": RSPAMD_CONTROLLER_PORT, "log": self.log,
                "config": self.conf, "local_d": self.local_d, "authserv_id": AUTHSERV_ID}

    def command(self):
        return ["rspamd", "-c", self.conf, "-u", RSPAMD_USER, "-g", RSPAMD_USER,
                "--var=LOCAL_CONFDIR=" + self.root, "--var=DBDIR=" + self.db_dir,
                "--var=RUNDIR=" + self.run_dir, "--var=LOGDIR=" + self.stack.log_dir]

    def write_config(self):
        user = pwd.getpwnam(RSPAMD_USER)
        make_dir(self.root, 0o755)
        make_dir(self.local_d, 0o755)
        make_dir(self.override_d, 0o755)
        make_dir(self.db_dir, 0o750, user.pw_uid, user.pw_gid)
        make_dir(self.run_dir, 0o750, user.pw_uid, user.pw_gid)
        if not os.path.exists(self.log):
            write_file(self.log, "", 0o640)
        os.chown(self.log, user.pw_uid, user.pw_gid)
        values = dict(host=HOST, milter_port=RSPAMD_MILTER_PORT,
                      controller_port=RSPAMD_CONTROLLER_PORT, pidfile=self.pidfile(),
                      log=self.log, run_dir=self.run_dir, dns_port=DNS_PORT, domain=DOMAIN,
                      selector=DKIM_SELECTOR, dkim_key=self.stack.dkim_key)
        files = {self.conf: "rspamd/rspamd.conf",
                 os.path.join(self.override_d, "options.inc"): "rspamd/override.d/options.inc"}
        for name in LOCAL_D:
            files[os.path.join(self.local_d, name)] = f"rspamd/local.d/{name}"
        for module in RSPAMD_DISABLED_MODULES:
            files[os.path.join(self.local_d, module + ".conf")] = "rspamd/disabled.conf"
        changed = False
        for path, template in files.items():
            changed |= write_file(path, render(template, **values))
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self.spawn(self.command())

    def reload(self):
        # SIGHUP makes rspamd spawn new workers while the old ones drain; a
        # message in that window may meet an old-config worker.  Restart.
        self.restart()
