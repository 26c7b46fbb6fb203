"""Dovecot: IMAP and IMAPS (on HOST, and on each certificate variant's own
address with its certificate: "local" blocks), LMTP for Postfix, SASL for Postfix (passwords,
and OAuth2 tokens checked at the stack's IdP), quota-status, and the
sieve_before script that files +junk mail into Junk."""

import grp
import os
import pwd
import secrets
import time

from . import endpoints
from .accounts import address
from .certvariants import VARIANT_SPECS
from .config import DOMAIN, HOST, IMAP_PORT, IMAPS_PORT, QUOTA_LIMIT, TLS_HOSTNAME, USERS, VMAIL_USER
from .faults import (
    JUNK_DETAIL,
    JUNK_FOLDER,
    NOAUTH_SERVICES,
    NOAUTH_USER,
    QUOTA_FULL_FILLER_BYTES,
    QUOTA_FULL_USER,
    QUOTA_STATUS_OVERQUOTA,
    USER_EXTRA_FIELDS,
)
from .idp_service import INTROSPECTION_CLIENT, INTROSPECTION_TIMEOUT_MSECS
from .procs import proc_cmdline
from .service import Service
from .system import StackError, make_dir, render, run, write_file

# IMAP sessions per user and client address (mail_max_userip_connections):
# raised above Dovecot's stock 10 for the tests that run twenty probes at once.
MAX_USERIP_CONNECTIONS = 100
STOCK_MAX_USERIP_CONNECTIONS = 10


class Dovecot(Service):
    name = "dovecot"
    packages = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve")

    def __init__(self, stack):
        super().__init__(stack)
        self.conf_dir = os.path.join(stack.dir, "dovecot")
        self.conf = os.path.join(self.conf_dir, "dovecot.conf")
        self.passwd_file = os.path.join(self.conf_dir, "users")
        # deny passdb, keyed "<auth service>/<user>" (the noauth knob)
        self.deny_file = os.path.join(self.conf_dir, "deny-users")
        # the oauth2 passdb's settings (with the IdP client secret)
        self.oauth2_conf = os.path.join(self.conf_dir, "oauth2.conf.ext")
        self.state_dir = os.path.join(self.conf_dir, "state")
        self.base_dir = stack.run_dir
        self.auth_socket = os.path.join(self.base_dir, "auth-postfix")
        self.lmtp_socket = os.path.join(self.base_dir, "lmtp-postfix")
        # quota-status -p postfix, a Postfix policy service (the full knob)
        self.quota_socket = os.path.join(self.base_dir, "quota-status-postfix")
        # global sieve_before script (+junk -> Junk), precompiled at up: the
        # LMTP process runs as vmail and cannot write a binary next to it
        self.sieve_dir = os.path.join(self.conf_dir, "sieve")
        self.sieve_before = os.path.join(self.sieve_dir, "before.sieve")
        self.sieve_before_bin = os.path.join(self.sieve_dir, "before.svbin")
        # not kept across processes: every up() writes the stack's own value
        self.max_userip_connections = MAX_USERIP_CONNECTIONS

    def pidfile(self):
        return os.path.join(self.base_dir, "master.pid")

    def matches(self, pid):
        cmd = proc_cmdline(pid)
        return bool(cmd) and cmd[0].endswith("dovecot") and self.conf in cmd

    def endpoints(self):
        return [endpoints.tcp(HOST, IMAP_PORT), endpoints.tcp(HOST, IMAPS_PORT),
                endpoints.unix(self.auth_socket), endpoints.unix(self.lmtp_socket),
                endpoints.unix(self.quota_socket)] + [
            endpoints.tcp(spec.host, port) for spec in VARIANT_SPECS for port in (IMAP_PORT, IMAPS_PORT)]

    def certificate_files(self):
        """Certificates read at (re)start: a new one needs a reload."""
        return [self.stack.cert_factory.cert_file(spec.name) for spec in VARIANT_SPECS]

    def info(self):
        return {"config": self.conf, "base_dir": self.base_dir,
                "passwd_file": self.passwd_file, "lmtp_socket": self.lmtp_socket,
                "auth_socket": self.auth_socket, "sieve_before": self.sieve_before,
                "quota_status_socket": self.quota_socket, "deny_file": self.deny_file,
                "oauth2_config": self.oauth2_conf,
                "auth_mechanisms": ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]}

    def write_config(self):
        s = self.stack
        make_dir(self.conf_dir, 0o755)
        make_dir(self.state_dir, 0o755)
        make_dir(self.base_dir, 0o755)
        vmail = pwd.getpwnam(VMAIL_USER)
        factory = s.cert_factory
        locals_ = "".join(render("dovecot/local-variant.conf", name=spec.name, address=spec.host,
                                 cert=factory.cert_file(spec.name), key=factory.key_file(spec.name))
                          for spec in VARIANT_SPECS)
        conf = render(
            "dovecot/dovecot.conf",
            base_dir=self.base_dir, state_dir=self.state_dir, log=self.log,
            instance=s.instance, tls_cert=s.tls_cert, tls_key=s.tls_key,
            passwd_file=self.passwd_file, mail_root=s.mail_dir,
            vmail_uid=vmail.pw_uid, vmail=VMAIL_USER, domain=DOMAIN,
            imap_port=IMAP_PORT, imaps_port=IMAPS_PORT, host=HOST,
            quota=QUOTA_LIMIT, hostname=TLS_HOSTNAME, sieve_before=self.sieve_before,
            deny_file=self.deny_file, quota_reply=QUOTA_STATUS_OVERQUOTA, oauth2_config=self.oauth2_conf,
            listen_addresses=" ".join([HOST, *(spec.host for spec in VARIANT_SPECS)]),
            cert_variant_locals=locals_,
            max_userip_connections=self.max_userip_connections)
        # before the config that names them: a missing passwd-file fails every login
        self._write_deny_file()     # re-read by Dovecot when it changes: no reload
        changed = self._write_oauth2_conf()
        changed |= write_file(self.conf, conf, 0o644)
        self._write_sieve_before()      # read at each delivery: no reload needed
        return changed

    def _write_deny_file(self):
        gid = grp.getgrnam("dovecot").gr_gid
        lines = "".join(f"{service}/{NOAUTH_USER}@{DOMAIN}:\n" for service in NOAUTH_SERVICES)
        return write_file(self.deny_file, "# generated by tests/mailstack: <service>/<user>, "
                          "refused even with the right password\n" + lines, 0o640, 0, gid)

    def _write_oauth2_conf(self):
        """The oauth2 passdb's file: read by the auth process (group dovecot),
        at start and reload only."""
        idp = self.stack.idp
        text = render("dovecot/oauth2.conf.ext", introspection_url=idp.introspection_url,
                      client_id=INTROSPECTION_CLIENT, client_secret=idp.secret(INTROSPECTION_CLIENT),
                      host=HOST, ca=self.stack.ca, timeout_msecs=INTROSPECTION_TIMEOUT_MSECS)
        return write_file(self.oauth2_conf, text, 0o640, 0, grp.getgrnam("dovecot").gr_gid)

    def write_passwd_file(self, accounts):
        """The passdb/userdb file from the users' password files; True if it changed."""
        make_dir(self.conf_dir, 0o755)
        lines = "".join(f"{address(u)}:{{PLAIN}}{accounts.password(u)}::::::{USER_EXTRA_FIELDS.get(u, '')}\n"
                        for u in USERS)
        old = os.stat(self.passwd_file).st_mtime if os.path.exists(self.passwd_file) else 0
        gid = grp.getgrnam("dovecot").gr_gid
        if not write_file(self.passwd_file, lines, 0o640, 0, gid):
            return False
        # Dovecot re-reads the file when (mtime, size) change, checked at
        # most once per second: force a new mtime second, then let the
        # clock pass a second boundary so the next lookup re-stats it.
        new = max(time.time(), old + 1)
        os.utime(self.passwd_file, (new, new))
        if self.is_running():
            time.sleep(1.0 - (time.time() % 1.0) + 0.02)
        return True

    def set_max_userip_connections(self, limit):
        """mail_max_userip_connections for new IMAP logins: the config
        rewritten and Dovecot reloaded (sessions already open keep going)."""
        self.max_userip_connections = int(limit)
        if self.write_config() and self.is_running():
            self.doveadm("reload")
            time.sleep(0.5)     # the reloaded master answers new logins with the new value

    def userip_connections(self, user):
        """IMAP sessions Dovecot counts for ``user`` now (doveadm who)."""
        out = self.doveadm("who", "-1", address(user), check=False).stdout
        return sum(1 for line in out.splitlines()[1:] if line.split()[:1] == [address(user)])

    def doveadm(self, *args, check=True):
        """Run doveadm against this instance."""
        return run(["doveadm", "-c", self.conf, *args], check=check)

    def _write_sieve_before(self):
        """Write the global sieve_before script and compile it with sievec
        when the binary is missing or stale.  Nothing needs a reload: Pigeonhole
        opens the script (and its .svbin) at every delivery."""
        make_dir(self.sieve_dir, 0o755)
        script = render("dovecot/before.sieve", detail=JUNK_DETAIL, folder=JUNK_FOLDER)
        changed = write_file(self.sieve_before, script, 0o644)
        try:
            stale = changed or (os.stat(self.sieve_before_bin).st_mtime
                                <= os.stat(self.sieve_before).st_mtime)
        except OSError:
            stale = True
        if stale:
            # Pigeonhole uses the binary only if it is newer than the script
            # (else it recompiles at every delivery and logs that it cannot
            # save the result): date the script back, then compile.
            past = time.time() - 2
            os.utime(self.sieve_before, (past, past))
            tmp = f"{self.sieve_before_bin}.tmp.{os.getpid()}"
            try:
                run(["sievec", "-c", self.conf, self.sieve_before, tmp],
                    log=os.path.join(self.stack.log_dir, "sievec.log"))
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.sieve_before_bin)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self.spawn(["dovecot", "-c", self.conf])

    # -- quota (the full knob) ----------------------------------------------
    def quota(self, user):
        """{"STORAGE": (value_kib, limit_kib or None), "MESSAGE": (...)} from
        doveadm quota get."""
        out = self.doveadm("quota", "get", "-u", address(user)).stdout
        res = {}
        for line in out.splitlines():
            parts = line.split()
            for kind in ("STORAGE", "MESSAGE"):
                if kind in parts:
                    i = parts.index(kind)
                    limit = parts[i + 2] if len(parts) > i + 2 else "-"
                    res[kind] = (int(parts[i + 1]), None if limit == "-" else int(limit))
        return res

    def fill_over_quota(self, maildir):
        """Make sure QUOTA_FULL_USER is over its quota: store a filler message
        straight into its Maildir (APPEND and LMTP would be refused: over
        quota) and let Dovecot recount.  Returns (KiB, limit KiB) when it
        filled, None when the mailbox was over quota already."""
        user = address(QUOTA_FULL_USER)
        value, limit = self.quota(user).get("STORAGE", (0, None))
        if limit is not None and value > limit:
            return None
        vmail = pwd.getpwnam(VMAIL_USER)
        for d in (os.path.dirname(os.path.dirname(maildir)), os.path.dirname(maildir),
                  maildir, os.path.join(maildir, "cur"), os.path.join(maildir, "new"),
                  os.path.join(maildir, "tmp")):
            if not os.path.isdir(d):
                make_dir(d, 0o700, vmail.pw_uid, vmail.pw_gid)
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        body = (f"From: MAILER-DAEMON@{DOMAIN}\r\nTo: {user}\r\nSubject: mailstack quota filler\r\n"
                f"Date: {date}\r\nMessage-ID: <quota-filler-{secrets.token_hex(8)}@{DOMAIN}>\r\n\r\n")
        line = "This message keeps the mailbox over its quota (tests/mailstack).\r\n"
        body += line * (QUOTA_FULL_FILLER_BYTES // len(line) + 1)
        name = f"{int(time.time())}.M{secrets.randbits(20)}P{os.getpid()}.mailstack-filler"
        tmp = os.path.join(maildir, "tmp", name)      # Maildir: write in tmp/, move to new/
        write_file(tmp, body, 0o600, vmail.pw_uid, vmail.pw_gid)
        os.rename(tmp, os.path.join(maildir, "new", name))
        self.doveadm("quota", "recalc", "-u", user)
        value, limit = self.quota(user).get("STORAGE", (0, None))
        if limit is None or value <= limit:
            raise StackError(f"{user} is not over quota after the filler: {value} KiB of {limit} KiB")
        return value, limit
