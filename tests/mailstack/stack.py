"""MailStack: the daemons together, their order, the stack's files, and the
knobs the tests turn (DNS records, passwords, greylisting, the queue, IMAP;
the OAuth2 IdP's are on stack.oauth; the certificate variants)."""

import contextlib
import hashlib
import json
import os
import pwd
import time

from . import faults, imapclient
from .accounts import Accounts, address
from .auxd_service import Auxd
from .certvariants import CERT_VARIANTS, CertFactory
from .config import (
    AUTHSERV_ID,
    DEFAULT_DMARC,
    DEFAULT_SPF,
    DKIM_NAME,
    DKIM_REVOKED,
    DKIM_SELECTOR,
    DMARC_NAME,
    DNS_PORT,
    DOMAIN,
    GREYLIST_POLICY_PORT,
    HOST,
    IDP_PORT,
    IMAP_PORT,
    IMAPS_EXPIRED_PORT,
    IMAPS_PORT,
    IMAPS_TLS10_PORT,
    MX_PORT,
    PORT_BASE,
    RSPAMD_MILTER_PORT,
    SPF_NAME,
    SUBMISSION_PORT,
    SUBMISSIONS_EXPIRED_PORT,
    SUBMISSIONS_PORT,
    SUBMISSIONS_TLS10_PORT,
    TLS_HOSTNAME,
    USERS,
    VMAIL_USER,
    stack_dir,
)
from .dkim import DkimKeys
from .dnsclient import dns_query
from .dnsmasq import Dnsmasq, checked_name, checked_values
from .dovecot import STOCK_MAX_USERIP_CONNECTIONS, Dovecot
from .idp_service import IdP, OAuthControl
from .packages import install_packages
from .postfix import Postfix
from .procs import tail
from .rspamd import Rspamd
from .system import StackError, make_dir, run, say, write_file
from .tls import Certificates


class _Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "MailStack." + self.name


KEEP = _Sentinel("KEEP")          # set_dns(): leave this record as it is
DEFAULT = _Sentinel("DEFAULT")    # set_dns()/set_txt()/set_greylist_seconds(): the default


class MailStack:
    KEEP = KEEP
    DEFAULT = DEFAULT
    DKIM_REVOKED = DKIM_REVOKED   # "v=DKIM1; p=" (revoked key)
    SPF_NAME, DKIM_NAME, DMARC_NAME = SPF_NAME, DKIM_NAME, DMARC_NAME

    def __init__(self, directory=None, verbose=True):
        self.dir = stack_dir(directory)
        self.verbose = verbose
        self.log_dir = os.path.join(self.dir, "log")
        self.tls_dir = os.path.join(self.dir, "tls")
        self.certificates = Certificates(self.tls_dir, os.path.join(self.log_dir, "openssl.log"), self._say)
        self.ca, self.ca_key = self.certificates.ca, self.certificates.ca_key
        self.tls_cert, self.tls_key = self.certificates.cert, self.certificates.key
        # EXPIRED server certificate (stack CA, DNS:localhost), ports *_EXPIRED_PORT
        self.expired_cert, self.expired_key = self.certificates.expired_cert, self.certificates.expired_key
        # the certificate variants (certvariants.py): cert_variant(name)
        self.cert_factory = CertFactory(self.tls_dir, self.ca, self.ca_key,
                                        os.path.join(self.log_dir, "openssl.log"), self._say)
        self.secrets_dir = os.path.join(self.dir, "secrets")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.accounts = Accounts(self.secrets_dir, self.mail_dir)
        self.initial_passwords = self.accounts.initial_passwords
        self.stack_json = os.path.join(self.dir, "stack.json")
        digest = hashlib.sha1(self.dir.encode()).hexdigest()[:8]
        self.instance = "mailstack-" + digest
        # Unix socket paths are limited to 107 bytes, and Postfix (postlog)
        # and Dovecot address theirs by absolute path: with a long DIR (e.g.
        # pytest's tmp_path) keep the socket-holding directories in /run.
        self.short_dir = self.dir if len(self.dir) <= 60 else "/run/mailstack-" + digest
        self.run_dir = os.path.join(self.short_dir, "run")
        self.dkim_dir = os.path.join(self.dir, "dkim")
        self.dkim = DkimKeys(self.dkim_dir, os.path.join(self.log_dir, "openssl.log"), self._say)
        self.dkim_key = self.dkim.key
        # a valid RSA key that is NOT the signing key ("wrong key" fault)
        self.dkim_other_key = self.dkim.other_key
        self.dnsmasq = Dnsmasq(self)
        self.rspamd = Rspamd(self)
        self.idp = IdP(self)
        self.dovecot = Dovecot(self)
        self.postfix = Postfix(self)
        self.auxd = Auxd(self)
        # the OAuth2 IdP's facts and knobs (tokens, slow or failing endpoints, counters)
        self.oauth = OAuthControl(self.idp)
        # start order (each needs the ones before it); stop is the reverse
        self.services = [self.dnsmasq, self.rspamd, self.idp, self.dovecot, self.auxd, self.postfix]

    def _say(self, msg):
        if self.verbose:
            say(msg)

    # ---------------------------------------------------------------- up/down
    def up(self):
        started = time.monotonic()
        if os.geteuid() != 0:
            raise StackError("mailstack must run as root")
        self.ensure_packages()
        self._ensure_dirs()
        self.certificates.ensure()
        renewed = self.cert_factory.ensure()    # certificate files made anew
        self.accounts.ensure()
        self.idp.ensure_secrets()       # before Dovecot's config, which holds its client's
        self.dovecot.write_passwd_file(self.accounts)
        if self.dkim.ensure():
            self.dnsmasq.forget_records()   # the published key must match the new one
        actions = []
        for svc in self.services:
            changed = svc.write_config()
            changed |= bool(renewed & set(svc.certificate_files()))
            if svc.is_running():
                if changed:
                    svc.reload()
                    actions.append(f"{svc.name} reloaded")
                else:
                    actions.append(f"{svc.name} already running")
            else:
                busy = [e for e in svc.endpoints() if e.is_busy()]
                if busy:
                    ports = ", ".join(str(e.port) for e in busy)
                    raise StackError(f"{svc.name}: port(s) {ports} already in use by something else")
                svc.start()
                actions.append(f"{svc.name} started")
        self.wait_ready()
        filled = self.dovecot.fill_over_quota(self.mailbox_path(faults.QUOTA_FULL_USER))
        if filled:
            self._say(f"{self.address(faults.QUOTA_FULL_USER)} filled over quota "
                      f"({filled[0]} KiB of {filled[1]} KiB)")
        info = self.write_stack_json()
        self._say(f"up in {time.monotonic() - started:.2f}s: {'; '.join(actions)}")
        return info

    def ensure_packages(self):
        packages, preseed = ["openssl"], []
        for svc in self.services:
            packages.extend(svc.packages)
            preseed.extend(svc.preseed)
        return install_packages(packages, preseed, announce=self._say)

    def _ensure_dirs(self):
        try:
            pwd.getpwnam(VMAIL_USER)
        except KeyError:
            run(["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", VMAIL_USER])
        vmail = pwd.getpwnam(VMAIL_USER)
        make_dir(self.dir, 0o755, 0, 0)
        make_dir(self.log_dir, 0o755)
        make_dir(self.secrets_dir, 0o700)
        make_dir(self.tls_dir, 0o755)
        make_dir(self.mail_dir, 0o700, vmail.pw_uid, vmail.pw_gid)

    def down(self):
        stopped = [svc.name for svc in reversed(self.services) if svc.stop()]
        self._say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return stopped

    def status(self):
        return {svc.name: {"running": svc.is_running(), "pid": svc.pid(),
                           "endpoints": {e.name: e.is_open() for e in svc.endpoints()}}
                for svc in self.services}

    def healthy(self):
        return all(s["running"] and all(s["endpoints"].values()) for s in self.status().values())

    def wait_ready(self, timeout=None, services=None):
        """Wait for every endpoint; each service has its own budget
        (svc.ready_timeout, e.g. 120 s for rspamd's first start) unless
        timeout is given."""
        started = time.monotonic()
        pending = [(svc, e) for svc in (services or self.services) for e in svc.endpoints()]
        while pending:
            pending = [(svc, e) for svc, e in pending if not e.is_open()]
            if not pending:
                break
            waited = time.monotonic() - started
            for svc, e in pending:
                budget = svc.ready_timeout if timeout is None else timeout
                logs = tail(svc.log) + tail(svc.start_log)
                if waited > budget:
                    raise StackError(f"{svc.name} not ready after {budget:.0f}s: {e.name}\n"
                                     f"--- {svc.log}\n{logs}")
                if waited > 3 and not svc.is_running():
                    raise StackError(f"{svc.name} died while starting\n--- {svc.log}\n{logs}")
            time.sleep(0.05)

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    # -------------------------------------------------------------------- DKIM
    def dkim_public_txt(self):
        """The correct TXT value for DKIM_NAME (s2026._domainkey.example.test)."""
        return self.dkim.public_txt()

    def dkim_other_public_txt(self):
        """A valid DKIM TXT value for a different RSA key: publish it at
        DKIM_NAME for the "wrong key" case (dkim=fail)."""
        return self.dkim.public_txt(self.dkim_other_key)

    # --------------------------------------------------------------------- DNS
    def default_dns_records(self):
        """{name: [TXT value, ...]} published after up/reset_dns()."""
        return self.dnsmasq.default_records()

    def dns_records(self):
        """The TXT records dnsmasq publishes: {name: [value, ...]}."""
        return self.dnsmasq.records()

    def set_txt(self, name, value):
        """Publish TXT at any name (the next message sees it).

        value: a str (one record; split into <=255-byte strings as needed),
        a list of str (several records at that name, e.g. two SPF records),
        None (no TXT record at that name: NXDOMAIN unless it has others), or
        MailStack.DEFAULT (the default record(s), if the name has any)."""
        return self._update_dns({name: value})

    def set_dns(self, spf=KEEP, dkim=KEEP, dmarc=KEEP):
        """Change the SPF (example.test), DKIM (s2026._domainkey.example.test)
        and DMARC (_dmarc.example.test) TXT records.  Each: a TXT string (or
        a list for several records), None to remove it, MailStack.KEEP
        (default) to leave it, MailStack.DEFAULT to restore it.  dnsmasq is
        restarted and the new answers checked before this returns, so the
        next message is verified against them (rspamd caches nothing)."""
        return self._update_dns({SPF_NAME: spf, DKIM_NAME: dkim, DMARC_NAME: dmarc})

    def reset_dns(self):
        """Back to the default records (and nothing else)."""
        return self._publish(self.default_dns_records())

    def _update_dns(self, changes):
        records = self.dns_records()
        defaults = self.default_dns_records()
        for name, value in changes.items():
            if value is KEEP:
                continue
            n = checked_name(name)
            values = defaults.get(n, []) if value is DEFAULT else checked_values(value, n)
            if values:
                records[n] = values
            else:
                records.pop(n, None)
        return self._publish(records)

    def _publish(self, records):
        published = self.dnsmasq.publish(records)
        self._refresh_stack_json()
        return published

    def dns_query(self, name, qtype="TXT", tcp=False):
        """(rcode, answers) from the stack's dnsmasq; see dns_query()."""
        return dns_query(name, qtype, (HOST, DNS_PORT), tcp=tcp)

    # ------------------------------------------------------------------- users
    def address(self, user):
        return address(user)

    def password_file(self, user):
        return self.accounts.password_file(user)

    def password(self, user):
        return self.accounts.password(user)

    def mailbox_path(self, user):
        """The user's Maildir (may not exist before the first delivery)."""
        return self.accounts.mailbox_path(user)

    def set_password(self, user, password):
        """Change a user's password (Dovecot passwd-file + DIR password file)."""
        self.accounts.set(user, password)
        self.dovecot.write_passwd_file(self.accounts)
        self._refresh_stack_json()

    def reset_passwords(self):
        self.accounts.reset()
        self.dovecot.write_passwd_file(self.accounts)
        self._refresh_stack_json()

    # ------------------------------------------------------------- greylisting
    def greylist_seconds(self):
        """N of the greylist knob (GREYLIST_DEFAULT_SECONDS unless set)."""
        return self.auxd.greylist_seconds()

    def set_greylist_seconds(self, seconds=faults.GREYLIST_DEFAULT_SECONDS):
        """Greylist +greylist recipients at the inbound MX for `seconds`
        (0: let them through at once; DEFAULT or no argument: back to 3).
        auxd reads the value when it first sees a message: messages already
        being greylisted keep the N they started with."""
        if seconds is DEFAULT or seconds is None:
            seconds = faults.GREYLIST_DEFAULT_SECONDS
        seconds = self.auxd.set_greylist_seconds(float(seconds))
        self._refresh_stack_json()
        return seconds

    # ------------------------------------------------ IMAP sessions per user+IP
    def imap_connection_limit(self):
        """Dovecot's mail_max_userip_connections now (the stack raises it to 100)."""
        return self.dovecot.max_userip_connections

    @contextlib.contextmanager
    def imap_connections_limited(self, limit=STOCK_MAX_USERIP_CONNECTIONS):
        """Within the block, Dovecot allows ``limit`` IMAP sessions per user and
        client address (default: Dovecot's stock 10); the stack's own value
        is put back after it, whatever happens."""
        previous = self.dovecot.max_userip_connections
        self.dovecot.set_max_userip_connections(limit)
        try:
            yield limit
        finally:
            self.dovecot.set_max_userip_connections(previous)

    def imap_sessions(self, user):
        """How many IMAP sessions of ``user`` Dovecot counts now."""
        return self.dovecot.userip_connections(user)

    # ------------------------------------------------------------ quota, queue
    def quota(self, user):
        """{"STORAGE": (value_kib, limit_kib or None), "MESSAGE": (...)}."""
        return self.dovecot.quota(user)

    def queue(self):
        """Postfix queue as a list of dicts (postqueue -j)."""
        return self.postfix.queue()

    def queue_ids(self, queue_name=None):
        """Queue IDs, optionally only of one queue ('hold', 'deferred', 'active', ...)."""
        return [m["queue_id"] for m in self.queue()
                if queue_name is None or m.get("queue_name") == queue_name]

    def release_held(self):
        """Release all held messages and flush the queue. Returns postsuper's output."""
        return self.postfix.release_held()

    def delete_held(self):
        return self.postfix.delete_held()

    def flush(self):
        self.postfix.flush()

    # -------------------------------------------------------------------- IMAP
    @contextlib.contextmanager
    def imap(self, user, timeout=30.0):
        """A logged-in imaplib client for user over IMAPS (HOST:IMAPS_PORT,
        certificate verified against the stack CA as TLS_HOSTNAME); logs out
        on exit.  Folder names passed to imaplib must be quoted by the caller
        (imap_mailbox() does it)."""
        with imapclient.session(self.ca, self.address(user), self.password(user), timeout) as client:
            yield client

    @staticmethod
    def imap_mailbox(name):
        """name as an IMAP quoted string (modified UTF-7), for imaplib calls."""
        return imapclient.mailbox(name)

    def append_message(self, user, folder, raw, internaldate=None, flags=None, create=True):
        """Store raw (bytes or str; bare LF line ends are sent as CRLF) in
        user's folder with the given INTERNALDATE: a datetime (naive = local
        time), an epoch number, a time tuple, or None (the server's "now").
        flags: e.g. "\\Seen" or ("\\Seen", "\\Flagged").  A missing folder is
        created (create=False: StackError).  Returns the new UID from the
        server's APPENDUID response code, or None if it gives none."""
        with self.imap(user) as client:
            return imapclient.append(client, self.address(user), folder, raw, internaldate, flags, create)

    def folder_uids(self, user, folder, search="ALL"):
        """UIDs (ints, ascending) in user's folder matching an IMAP SEARCH
        key (a str such as 'ALL', 'UNSEEN', 'SUBJECT "x"', 'BEFORE 1-Jan-2020',
        or a sequence of search-key atoms).  Read-only (EXAMINE): flags such
        as \\Recent and \\Seen are left alone.  [] if the folder does not
        exist."""
        with self.imap(user) as client:
            return imapclient.uids(client, self.address(user), folder, search)

    def delete_all(self, user, folder):
        """Empty user's folder (UID STORE 1:* +FLAGS.SILENT (\\Deleted),
        EXPUNGE).  Returns the number of messages removed (0 if the folder
        does not exist)."""
        with self.imap(user) as client:
            return imapclient.expunge_all(client, self.address(user), folder)

    # -------------------------------------------------------- certificates
    CERT_VARIANTS = CERT_VARIANTS

    def cert_variant(self, name):
        """The certificate variant called name (see certvariants.py): a
        CertVariant with .host, .smtp_port (implicit TLS), .imap_port
        (IMAPS), .smtp_starttls_port, .imap_starttls_port, .cert_file,
        .ca_file, .not_after (aware UTC datetime), .not_after_text (as
        openssl prints it), .verify_error, .tls_version, ...  KeyError for a
        name not in CERT_VARIANTS."""
        return self.cert_factory.variant(name)

    def cert_variants(self):
        """{name: CertVariant} for all of CERT_VARIANTS."""
        return self.cert_factory.variants()

    # -------------------------------------------------------- stack.json, env
    def info(self):
        """Everything a test or a person needs to know about the stack (stack.json)."""
        fault_info = faults.describe(self.address(faults.QUOTA_FULL_USER),
                                     self.address(faults.NOAUTH_USER), self.greylist_seconds())
        fault_info["expired_cert"] = self.expired_cert
        return {
            "dir": self.dir,
            "domain": DOMAIN,
            "host": HOST,
            "tls_hostname": TLS_HOSTNAME,
            "port_base": PORT_BASE,
            "ports": {"submission": SUBMISSION_PORT, "submissions": SUBMISSIONS_PORT,
                      "mx": MX_PORT, "imap": IMAP_PORT, "imaps": IMAPS_PORT,
                      "submissions_expired": SUBMISSIONS_EXPIRED_PORT,
                      "imaps_expired": IMAPS_EXPIRED_PORT,
                      "submissions_tls10": SUBMISSIONS_TLS10_PORT, "imaps_tls10": IMAPS_TLS10_PORT,
                      "greylist_policy": GREYLIST_POLICY_PORT, "idp": IDP_PORT},
            "ca": self.ca,
            "tls": {"ca": self.ca, "cert": self.tls_cert, "key": self.tls_key,
                    "expired_cert": self.expired_cert, "expired_key": self.expired_key,
                    "expired_not_after": self.certificates.not_after(self.expired_cert),
                    "idp_cert": self.idp.cert, "idp_key": self.idp.key},
            "users": {u: {"address": self.address(u), "login": self.address(u),
                          "password": self.password(u),
                          "password_file": self.password_file(u),
                          "maildir": self.mailbox_path(u)} for u in USERS},
            "logs": {svc.name: svc.log for svc in self.services},
            "postfix": self.postfix.info(),
            "dovecot": self.dovecot.info(),
            "auxd": self.auxd.info(),
            "oauth": self.idp.info(),
            "faults": fault_info,
            "dns": self.dnsmasq.info(),
            "dkim": {"selector": DKIM_SELECTOR, "domain": DOMAIN, "name": DKIM_NAME,
                     "private_key": self.dkim_key, "other_private_key": self.dkim_other_key,
                     "public_txt": self.dkim_public_txt(),
                     "other_public_txt": self.dkim_other_public_txt(),
                     "revoked_txt": DKIM_REVOKED},
            "spf": {"name": SPF_NAME, "default": DEFAULT_SPF},
            "dmarc": {"name": DMARC_NAME, "default": DEFAULT_DMARC},
            "rspamd": self.rspamd.info(),
            "authserv_id": AUTHSERV_ID,
            "certificates": self.cert_factory.info(),
        }

    def write_stack_json(self):
        info = self.info()
        write_file(self.stack_json, json.dumps(info, indent=2, sort_keys=True) + "\n", 0o600)
        return info

    def _refresh_stack_json(self):
        """After a knob changed: stack.json tells the truth again (if there is one)."""
        if os.path.exists(self.stack_json):
            self.write_stack_json()

    def env(self):
        """MAILSTACK_* variables for a shell (``python3 tests/mailstack env``)."""
        info = self.info()
        out = {"MAILSTACK_DIR": self.dir, "MAILSTACK_JSON": self.stack_json,
               "MAILSTACK_PORT_BASE": str(PORT_BASE),
               "MAILSTACK_HOST": HOST, "MAILSTACK_TLS_HOSTNAME": TLS_HOSTNAME,
               "MAILSTACK_CA": self.ca, "MAILSTACK_DOMAIN": DOMAIN,
               "MAILSTACK_POSTFIX_CONFIG_DIR": self.postfix.conf_dir,
               "MAILSTACK_NAMESERVER": f"{HOST}:{DNS_PORT}",
               "MAILSTACK_DNS_HOST": HOST, "MAILSTACK_DNS_PORT": str(DNS_PORT),
               "MAILSTACK_AUTHSERV_ID": AUTHSERV_ID,
               "MAILSTACK_DKIM_SELECTOR": DKIM_SELECTOR,
               "MAILSTACK_RSPAMD_MILTER_PORT": str(RSPAMD_MILTER_PORT)}
        for name, port in info["ports"].items():
            out[f"MAILSTACK_{name.upper()}_PORT"] = str(port)
        oauth = info["oauth"]
        out.update({"MAILSTACK_OAUTH_ISSUER": oauth["issuer"],
                    "MAILSTACK_OAUTH_TOKEN_URL": oauth["token_url"],
                    "MAILSTACK_OAUTH_INTROSPECTION_URL": oauth["introspection_url"],
                    "MAILSTACK_OAUTH_CA": oauth["ca"],
                    "MAILSTACK_OAUTH_ADMIN_URL": oauth["admin"]["url"],
                    "MAILSTACK_OAUTH_ADMIN_SECRET_FILE": oauth["admin"]["secret_file"]})
        for client_id, client in oauth["clients"].items():
            name = client_id.upper().replace("-", "_")
            out[f"MAILSTACK_OAUTH_{name}_CLIENT_ID"] = client_id
            if client["secret_file"]:
                out[f"MAILSTACK_OAUTH_{name}_SECRET_FILE"] = client["secret_file"]
        for user, details in info["users"].items():
            out[f"MAILSTACK_{user.upper()}_ADDRESS"] = details["address"]
            out[f"MAILSTACK_{user.upper()}_PASSWORD_FILE"] = details["password_file"]
        certificates = info["certificates"]
        if certificates:
            out["MAILSTACK_UNKNOWN_CA"] = certificates["unknown_ca"]
        for name, variant in certificates.get("variants", {}).items():
            prefix = f"MAILSTACK_CERT_{name.upper()}"
            out.update({f"{prefix}_HOST": variant["host"], f"{prefix}_SMTP_PORT": str(variant["smtp_port"]),
                        f"{prefix}_IMAP_PORT": str(variant["imap_port"]),
                        f"{prefix}_FILE": variant["cert_file"], f"{prefix}_CA": variant["ca_file"],
                        f"{prefix}_NOT_AFTER": variant["not_after"]})
        return out

    def check_created(self):
        """StackError unless up has run in this directory."""
        if not os.path.exists(self.password_file(USERS[0])):
            raise StackError(f"no stack in {self.dir} yet: run 'up' first")
