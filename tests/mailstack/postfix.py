"""Postfix: the submission ports (STARTTLS, implicit TLS, and the expired-
certificate twin), both submission ports again on each certificate
variant's own address with its certificate, the inbound "MX" port the
submitted mail is relayed to, the fault knobs' access maps, and the queue
(hold, release, flush)."""

import json
import os
import pwd

from . import endpoints
from .certvariants import VARIANT_SPECS
from .config import (
    DOMAIN,
    GREYLIST_POLICY_PORT,
    HOST,
    MX_HOSTNAME,
    MX_PORT,
    RSPAMD_MILTER_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    TLS_HOSTNAME,
    USERS,
)
from .faults import (
    FORGED_AUTH_RESULTS,
    GREYLIST_DETAIL,
    HOLD_TEMPFAIL_REPLY,
    REJECT_REPLY,
    SENDER_REJECT_ACTION,
    SENDER_REJECT_DETAIL,
)
from .procs import proc_cmdline
from .service import Service
from .system import make_dir, render, run, write_file

# Preseeded before the package is installed, so no system main.cf is written.
POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration"


class Postfix(Service):
    name = "postfix"
    packages = ("postfix",)
    preseed = (POSTFIX_PRESEED,)
    # Postfix prints fatal errors only when stderr is a terminal (and to
    # maillog_file only once postlogd runs): a failed start is often silent.
    start_hint = ("\nhint: Postfix shows startup fatals only on a tty; try: "
                  "script -qc 'postfix -c <config_dir> check' /dev/null")

    def __init__(self, stack):
        super().__init__(stack)
        self.conf_dir = os.path.join(stack.dir, "postfix", "etc")
        self.queue_dir = os.path.join(stack.short_dir, "postfix", "spool")
        self.data_dir = os.path.join(stack.dir, "postfix", "data")
        self.recipient_access = os.path.join(self.conf_dir, "recipient_access.regexp")
        self.sender_access = os.path.join(self.conf_dir, "sender_access.regexp")
        self.greylist_access = os.path.join(self.conf_dir, "greylist_access.regexp")
        self.vmailbox = os.path.join(self.conf_dir, "vmailbox")

    def pidfile(self):
        return os.path.join(self.queue_dir, "pid", "master.pid")

    def matches(self, pid):
        cmd = proc_cmdline(pid)
        if not cmd or not cmd[0].endswith("/master"):
            return False
        try:   # master chdir()s into its queue directory
            return os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == os.path.realpath(self.queue_dir)
        except OSError:
            return False

    def endpoints(self):
        return [endpoints.tcp(HOST, port)
                for port in (SUBMISSION_PORT, SUBMISSIONS_PORT, MX_PORT, SUBMISSIONS_EXPIRED_PORT)] + [
            endpoints.tcp(spec.host, port)
            for spec in VARIANT_SPECS for port in (SUBMISSION_PORT, SUBMISSIONS_PORT)]

    def certificate_files(self):
        """Certificates read at (re)start: a new one needs a reload."""
        return [self.stack.cert_factory.cert_file(spec.name) for spec in VARIANT_SPECS]

    def info(self):
        return {"config_dir": self.conf_dir, "queue_dir": self.queue_dir,
                "recipient_access": self.recipient_access,
                "sender_access": self.sender_access,
                "greylist_access": self.greylist_access}

    def write_config(self):
        s = self.stack
        dovecot = s.dovecot
        postfix_user = pwd.getpwnam("postfix")
        make_dir(os.path.join(s.dir, "postfix"), 0o755)
        make_dir(os.path.dirname(self.queue_dir), 0o755)
        make_dir(self.conf_dir, 0o755)
        make_dir(self.queue_dir, 0o755)
        make_dir(self.data_dir, 0o700, postfix_user.pw_uid, postfix_user.pw_gid)
        values = dict(
            queue_dir=self.queue_dir, data_dir=self.data_dir, log=self.log,
            log_dir=s.log_dir, domain=DOMAIN, hostname=TLS_HOSTNAME,
            tls_cert=s.tls_cert, tls_key=s.tls_key, auth_socket=dovecot.auth_socket,
            lmtp_socket=dovecot.lmtp_socket, vmailbox=self.vmailbox,
            recipient_access=self.recipient_access, host=HOST,
            sub_port=SUBMISSION_PORT, subs_port=SUBMISSIONS_PORT,
            mx_port=MX_PORT, mx_hostname=MX_HOSTNAME,
            milter=f"inet:{HOST}:{RSPAMD_MILTER_PORT}",
            sender_access=self.sender_access, greylist_access=self.greylist_access,
            quota_socket=dovecot.quota_socket, greylist_port=GREYLIST_POLICY_PORT,
            subs_expired_port=SUBMISSIONS_EXPIRED_PORT,
            expired_cert=s.expired_cert, expired_key=s.expired_key)
        values["cert_variant_services"] = "".join(
            render("postfix/master-variant.cf", **values, name=spec.name, address=spec.host,
                   cert=s.cert_factory.cert_file(spec.name), key=s.cert_factory.key_file(spec.name))
            for spec in VARIANT_SPECS)
        files = {
            os.path.join(self.conf_dir, "main.cf"): render("postfix/main.cf", **values),
            os.path.join(self.conf_dir, "master.cf"): render("postfix/master.cf", **values),
            self.recipient_access: render("postfix/recipient_access.regexp", tempfail=HOLD_TEMPFAIL_REPLY,
                                          reject=REJECT_REPLY, forged=FORGED_AUTH_RESULTS),
            self.sender_access: render("postfix/sender_access.regexp", detail=SENDER_REJECT_DETAIL,
                                       reply=SENDER_REJECT_ACTION),
            self.greylist_access: render("postfix/greylist_access.regexp", detail=GREYLIST_DETAIL),
            self.vmailbox: "".join(f"{u}@{DOMAIN} {DOMAIN}/{u}/\n" for u in USERS),
        }
        changed = False
        for path, text in files.items():
            changed |= write_file(path, text)
        return changed

    def _env(self):
        return dict(os.environ, MAIL_CONFIG=self.conf_dir)

    def start(self):
        self.clear_stale_pidfile()
        self.spawn(["postfix", "-c", self.conf_dir, "start"], env=self._env())

    def cmd(self, *args, check=True):
        """Run a Postfix admin command (postsuper, postqueue, ...) on this instance."""
        return run([args[0], "-c", self.conf_dir, *args[1:]], check=check, env=self._env())

    # -- the queue ------------------------------------------------------------
    def queue(self):
        """The queue as a list of dicts (postqueue -j)."""
        res = self.cmd("postqueue", "-j")
        return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]

    def release_held(self):
        """Release all held messages and flush the queue. Returns postsuper's output."""
        out = self.cmd("postsuper", "-H", "ALL").stdout
        self.flush()
        return out.strip()

    def delete_held(self):
        return self.cmd("postsuper", "-d", "ALL", "hold").stdout.strip()

    def flush(self):
        self.cmd("postqueue", "-f")
