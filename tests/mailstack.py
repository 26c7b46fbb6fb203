#!/usr/bin/env python3
"""A private, loopback-only mail stack for testing check_email_roundtrip.

    python3 tests/mailstack.py up|down|status|env [--dir DIR]

DIR defaults to $MAILSTACK_DIR, else DEFAULT_DIR below.  Must run as root
(Debian 12, no systemd needed).  Standard library only.

Mail path:

    client -> Postfix submission 127.0.0.1:10587 (STARTTLS required, AUTH)
           or Postfix submissions 127.0.0.1:10465 (implicit TLS, AUTH)
              SASL via the Dovecot auth socket
           -> content_filter smtp:[127.0.0.1]:10025
           -> Postfix inbound "MX" 127.0.0.1:10025 (no auth, example.test only)
           -> LMTP (unix socket) -> Dovecot (sieve, quota) -> Maildir
    client <- Dovecot IMAP 127.0.0.1:10143 (STARTTLS) and IMAPS 127.0.0.1:10993

The TLS server certificate is issued by a private CA (DIR/tls/ca.pem) for
DNS:localhost only: connect to "localhost" to verify OK; connecting by
127.0.0.1 is the "certificate does not match host name" case.

Fault knobs on the submission ports (recipient local part, case-insensitive,
the tag may be followed by "-", "." or "_" and anything, e.g. probe+hold-123):
    +hold      accepted (250) but kept in the hold queue -> release_held()
    +tempfail  451 4.7.0 Rate limit exceeded, try again later   (at RCPT)
    +reject    550 5.7.1 Recipient rejected by policy          (at RCPT)
plus set_password()/reset_passwords().

Adding a daemon (rspamd, dnsmasq, ...) = one more Service subclass in
MailStack.services (order = start order), with packages/write_config/start/
reload/endpoints/info.
"""

import argparse
import hashlib
import json
import os
import pwd
import grp
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------
HOST = "127.0.0.1"
TLS_HOSTNAME = "localhost"
DOMAIN = "example.test"
MX_HOSTNAME = "mx." + DOMAIN

SUBMISSION_PORT = 10587     # Postfix, STARTTLS required, AUTH
SUBMISSIONS_PORT = 10465    # Postfix, implicit TLS, AUTH
MX_PORT = 10025             # Postfix inbound, no auth, example.test only
IMAP_PORT = 10143           # Dovecot IMAP (STARTTLS offered)
IMAPS_PORT = 10993          # Dovecot IMAPS

USERS = ("probe", "other")  # local parts @DOMAIN
QUOTA_LIMIT = "1G"

DEFAULT_DIR = "/var/tmp/check_email_roundtrip-stack"
VMAIL_USER = "vmail"

POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration"
POLICY_RC_D = "/usr/sbin/policy-rc.d"

HOLD_TEMPFAIL_REPLY = "451 4.7.0 Rate limit exceeded, try again later"
REJECT_REPLY = "550 5.7.1 Recipient rejected by policy"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
class StackError(RuntimeError):
    pass


def _log(msg):
    print("mailstack: " + msg, file=sys.stderr, flush=True)


def _run(cmd, check=True, env=None, timeout=600, log=None):
    """Run a short command; never lets it write to our stdout/stderr."""
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, timeout=timeout,
                         universal_newlines=True)
    if log:
        with open(log, "a") as fh:
            fh.write("$ %s\n%s" % (" ".join(cmd), res.stdout))
    if check and res.returncode != 0:
        raise StackError("command failed (rc=%d): %s\n%s"
                         % (res.returncode, " ".join(cmd), res.stdout[-4000:]))
    return res


def _write(path, content, mode=0o644, uid=None, gid=None):
    """Write atomically if content differs.  Returns True if changed."""
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(path, "rb") as fh:
            same = fh.read() == data
    except OSError:
        same = False
    if not same:
        tmp = "%s.tmp.%d" % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    os.chmod(path, mode)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    return not same


def _mkdir(path, mode=0o755, uid=None, gid=None):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)


def _proc_stat(pid):
    """(state, ppid, starttime) of a process, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            data = fh.read()
    except (OSError, ValueError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_alive(pid, starttime=None):
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):   # zombies count as dead
        return False
    return starttime is None or st[2] == starttime


def _proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st:
                children.setdefault(st[1], []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def _tcp_open(host, port, timeout=0.3):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unix_open(path, timeout=0.3):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _endpoint_open(e):
    return _tcp_open(e[1], e[2]) if e[0] == "tcp" else _unix_open(e[1])


def _read_pidfile(path):
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path, n=30):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------
class Service:
    """One daemon.  Subclasses fill in the specifics."""
    name = "?"
    packages = ()
    preseed = ()          # debconf-set-selections lines
    start_hint = ""

    def __init__(self, stack):
        self.stack = stack

    # -- to override ------------------------------------------------------
    def write_config(self):
        """Write private config files; return True if anything changed."""
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def pidfile(self):
        raise NotImplementedError

    def matches(self, pid):
        """Is pid our daemon (and not a reused PID)?"""
        raise NotImplementedError

    def endpoints(self):
        """[('tcp', host, port) | ('unix', path)] that must be ready."""
        return []

    def info(self):
        return {}

    def reload(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGHUP)

    # -- generic ------------------------------------------------------------
    def pid(self):
        pid = _read_pidfile(self.pidfile())
        if pid and _proc_alive(pid) and self.matches(pid):
            return pid
        return None

    def is_running(self):
        return self.pid() is not None

    def clear_stale_pidfile(self):
        if not self.is_running() and os.path.exists(self.pidfile()):
            os.unlink(self.pidfile())

    def stop(self, timeout=STOP_TIMEOUT):
        pid = self.pid()
        if not pid:
            self.clear_stale_pidfile()
            return False
        procs = []
        for p in [pid] + _descendants(pid):
            st = _proc_stat(p)
            if st:
                procs.append((p, st[2]))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(_proc_alive(p, t) for p, t in procs):
                break
            time.sleep(0.05)
        else:
            for p, t in procs:
                if _proc_alive(p, t):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            end = time.monotonic() + 5
            while time.monotonic() < end and any(_proc_alive(p, t) for p, t in procs):
                time.sleep(0.05)
        if os.path.exists(self.pidfile()):
            try:
                os.unlink(self.pidfile())
            except OSError:
                pass
        return True

    def _spawn(self, cmd, logfile, env=None):
        """Run a daemonizing start command; stdio goes to logfile/devnull."""
        with open(logfile, "a") as out:
            out.write("\n--- %s $ %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(cmd)))
            out.flush()
            rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, close_fds=True)
        if rc != 0:
            raise StackError("%s: start failed (rc=%d): %s\n%s%s"
                             % (self.name, rc, " ".join(cmd), _tail(logfile),
                                _tail(self.log)) + self.start_hint)


class Dovecot(Service):
    name = "dovecot"
    packages = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve")

    def __init__(self, stack):
        super().__init__(stack)
        s = stack
        self.conf_dir = os.path.join(s.dir, "dovecot")
        self.conf = os.path.join(self.conf_dir, "dovecot.conf")
        self.passwd_file = os.path.join(self.conf_dir, "users")
        self.state_dir = os.path.join(self.conf_dir, "state")
        self.base_dir = s.run_dir
        self.log = os.path.join(s.log_dir, "dovecot.log")
        self.start_log = os.path.join(s.log_dir, "dovecot-start.log")
        self.auth_socket = os.path.join(self.base_dir, "auth-postfix")
        self.lmtp_socket = os.path.join(self.base_dir, "lmtp-postfix")

    def pidfile(self):
        return os.path.join(self.base_dir, "master.pid")

    def matches(self, pid):
        cmd = _proc_cmdline(pid)
        return bool(cmd) and cmd[0].endswith("dovecot") and self.conf in cmd

    def endpoints(self):
        return [("tcp", HOST, IMAP_PORT), ("tcp", HOST, IMAPS_PORT),
                ("unix", self.auth_socket), ("unix", self.lmtp_socket)]

    def info(self):
        return {"config": self.conf, "base_dir": self.base_dir,
                "passwd_file": self.passwd_file, "lmtp_socket": self.lmtp_socket,
                "auth_socket": self.auth_socket}

    def write_config(self):
        s = self.stack
        _mkdir(self.conf_dir, 0o755)
        _mkdir(self.state_dir, 0o755)
        _mkdir(self.base_dir, 0o755)
        vm = pwd.getpwnam(VMAIL_USER)
        conf = DOVECOT_CONF.format(
            base_dir=self.base_dir, state_dir=self.state_dir, log=self.log,
            instance=s.instance, tls_cert=s.tls_cert, tls_key=s.tls_key,
            passwd_file=self.passwd_file, mail_root=s.mail_dir,
            vmail_uid=vm.pw_uid, vmail=VMAIL_USER, domain=DOMAIN,
            imap_port=IMAP_PORT, imaps_port=IMAPS_PORT, host=HOST,
            quota=QUOTA_LIMIT, hostname=TLS_HOSTNAME)
        return _write(self.conf, conf, 0o644)

    def start(self):
        self.clear_stale_pidfile()
        self._spawn(["dovecot", "-c", self.conf], self.start_log)


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
        s = stack
        self.conf_dir = os.path.join(s.dir, "postfix", "etc")
        self.queue_dir = os.path.join(s.short_dir, "postfix", "spool")
        self.data_dir = os.path.join(s.dir, "postfix", "data")
        self.log = os.path.join(s.log_dir, "postfix.log")
        self.start_log = os.path.join(s.log_dir, "postfix-start.log")
        self.recipient_access = os.path.join(self.conf_dir, "recipient_access.regexp")
        self.vmailbox = os.path.join(self.conf_dir, "vmailbox")

    def pidfile(self):
        return os.path.join(self.queue_dir, "pid", "master.pid")

    def matches(self, pid):
        cmd = _proc_cmdline(pid)
        if not cmd or not cmd[0].endswith("/master"):
            return False
        try:   # master chdir()s into its queue directory
            return os.path.realpath(os.readlink("/proc/%d/cwd" % pid)) == \
                os.path.realpath(self.queue_dir)
        except OSError:
            return False

    def endpoints(self):
        return [("tcp", HOST, SUBMISSION_PORT), ("tcp", HOST, SUBMISSIONS_PORT),
                ("tcp", HOST, MX_PORT)]

    def info(self):
        return {"config_dir": self.conf_dir, "queue_dir": self.queue_dir,
                "recipient_access": self.recipient_access}

    def write_config(self):
        s = self.stack
        dv = s.dovecot
        pf = pwd.getpwnam("postfix")
        _mkdir(os.path.join(s.dir, "postfix"), 0o755)
        _mkdir(os.path.dirname(self.queue_dir), 0o755)
        _mkdir(self.conf_dir, 0o755)
        _mkdir(self.queue_dir, 0o755)
        _mkdir(self.data_dir, 0o700, pf.pw_uid, pf.pw_gid)
        fmt = dict(
            queue_dir=self.queue_dir, data_dir=self.data_dir, log=self.log,
            log_dir=s.log_dir, domain=DOMAIN, hostname=TLS_HOSTNAME,
            tls_cert=s.tls_cert, tls_key=s.tls_key, auth_socket=dv.auth_socket,
            lmtp_socket=dv.lmtp_socket, vmailbox=self.vmailbox,
            recipient_access=self.recipient_access, host=HOST,
            sub_port=SUBMISSION_PORT, subs_port=SUBMISSIONS_PORT,
            mx_port=MX_PORT, mx_hostname=MX_HOSTNAME)
        changed = False
        changed |= _write(os.path.join(self.conf_dir, "main.cf"), POSTFIX_MAIN_CF.format(**fmt))
        changed |= _write(os.path.join(self.conf_dir, "master.cf"), POSTFIX_MASTER_CF.format(**fmt))
        changed |= _write(self.recipient_access, RECIPIENT_ACCESS_MAP.format(
            tempfail=HOLD_TEMPFAIL_REPLY, reject=REJECT_REPLY))
        changed |= _write(self.vmailbox, "".join(
            "%s@%s %s/%s/\n" % (u, DOMAIN, DOMAIN, u) for u in USERS))
        return changed

    def _env(self):
        env = dict(os.environ)
        env["MAIL_CONFIG"] = self.conf_dir
        return env

    def start(self):
        self.clear_stale_pidfile()
        self._spawn(["postfix", "-c", self.conf_dir, "start"], self.start_log,
                    env=self._env())

    def cmd(self, *args, check=True):
        """Run a Postfix admin command (postsuper, postqueue, ...) on this instance."""
        return _run([args[0], "-c", self.conf_dir] + list(args[1:]), check=check,
                    env=self._env())


# --------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------
class MailStack:
    def __init__(self, directory=None, verbose=True):
        directory = directory or os.environ.get("MAILSTACK_DIR") or DEFAULT_DIR
        self.dir = os.path.abspath(directory)
        self.verbose = verbose
        self.tls_dir = os.path.join(self.dir, "tls")
        self.ca = os.path.join(self.tls_dir, "ca.pem")
        self.ca_key = os.path.join(self.tls_dir, "ca.key")
        self.tls_cert = os.path.join(self.tls_dir, "server.pem")
        self.tls_key = os.path.join(self.tls_dir, "server.key")
        self.secrets_dir = os.path.join(self.dir, "secrets")
        self.initial_passwords = os.path.join(self.secrets_dir, "initial-passwords.json")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.log_dir = os.path.join(self.dir, "log")
        self.stack_json = os.path.join(self.dir, "stack.json")
        digest = hashlib.sha1(self.dir.encode()).hexdigest()[:8]
        self.instance = "mailstack-" + digest
        # Unix socket paths are limited to 107 bytes, and Postfix (postlog)
        # and Dovecot address theirs by absolute path: with a long DIR (e.g.
        # pytest's tmp_path) keep the socket-holding directories in /run.
        self.short_dir = self.dir if len(self.dir) <= 60 else "/run/mailstack-" + digest
        self.run_dir = os.path.join(self.short_dir, "run")
        # start order; stop is the reverse
        self.dovecot = Dovecot(self)
        self.postfix = Postfix(self)
        self.services = [self.dovecot, self.postfix]

    def _say(self, msg):
        if self.verbose:
            _log(msg)

    # ---------------------------------------------------------------- up
    def up(self):
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise StackError("mailstack must run as root")
        self.ensure_packages()
        self._ensure_dirs()
        self._ensure_tls()
        self._ensure_users()
        actions = []
        for svc in self.services:
            changed = svc.write_config()
            if svc.is_running():
                if changed:
                    svc.reload()
                    actions.append("%s reloaded" % svc.name)
                else:
                    actions.append("%s already running" % svc.name)
            else:
                busy = [e for e in svc.endpoints() if e[0] == "tcp" and _tcp_open(e[1], e[2])]
                if busy:
                    raise StackError("%s: port(s) %s already in use by something else"
                                     % (svc.name, ", ".join(str(e[2]) for e in busy)))
                svc.start()
                actions.append("%s started" % svc.name)
        self.wait_ready()
        info = self.write_stack_json()
        self._say("up in %.2fs: %s" % (time.monotonic() - t0, "; ".join(actions)))
        return info

    def ensure_packages(self):
        pkgs, preseed = ["openssl"], []
        for svc in self.services:
            pkgs.extend(svc.packages)
            preseed.extend(svc.preseed)
        missing = self._missing_packages(pkgs)
        if not missing:
            return []
        self._say("installing %s" % " ".join(missing))
        if preseed:
            subprocess.run(["debconf-set-selections"], input="\n".join(preseed) + "\n",
                           universal_newlines=True, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        created_policy = False
        if not os.path.exists(POLICY_RC_D):      # leave an existing one alone
            with open(POLICY_RC_D, "w") as fh:
                fh.write("#!/bin/sh\n# temporary, by tests/mailstack.py\nexit 101\n")
            os.chmod(POLICY_RC_D, 0o755)
            created_policy = True
        try:
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing
            lists = "/var/lib/apt/lists"
            if not any(n.endswith("Packages") or "Packages." in n for n in os.listdir(lists)):
                _run(["apt-get", "update", "-q"], env=env)
            res = _run(install, check=False, env=env)
            if res.returncode != 0:
                _run(["apt-get", "update", "-q"], env=env)
                _run(install, env=env)
        finally:
            if created_policy:
                os.unlink(POLICY_RC_D)
        still = self._missing_packages(pkgs)
        if still:
            raise StackError("packages still missing: %s" % " ".join(still))
        return missing

    @staticmethod
    def _missing_packages(pkgs):
        res = _run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"] + list(pkgs),
                   check=False)
        ok = set()
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].startswith("ii"):
                ok.add(parts[0].split(":")[0])
        return [p for p in pkgs if p not in ok]

    def _ensure_dirs(self):
        try:
            pwd.getpwnam(VMAIL_USER)
        except KeyError:
            _run(["useradd", "--system", "--user-group", "--no-create-home",
                  "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", VMAIL_USER])
        vm = pwd.getpwnam(VMAIL_USER)
        _mkdir(self.dir, 0o755, 0, 0)
        _mkdir(self.log_dir, 0o755)
        _mkdir(self.secrets_dir, 0o700)
        _mkdir(self.tls_dir, 0o755)
        _mkdir(self.mail_dir, 0o700, vm.pw_uid, vm.pw_gid)

    def _ensure_tls(self):
        cnf = os.path.join(self.tls_dir, "openssl.cnf")
        _write(cnf, OPENSSL_CNF.format(hostname=TLS_HOSTNAME))
        log = os.path.join(self.log_dir, "openssl.log")
        new_ca = False
        if not (os.path.exists(self.ca) and os.path.exists(self.ca_key)):
            self._say("generating CA")
            _run(["openssl", "req", "-x509", "-config", cnf, "-extensions", "ca_ext",
                  "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key, "-out", self.ca,
                  "-days", "3650", "-subj", "/O=check_email_roundtrip tests/CN=Mailstack Test CA"],
                 log=log)
            os.chmod(self.ca_key, 0o600)
            os.chmod(self.ca, 0o644)
            new_ca = True
        valid = (not new_ca and os.path.exists(self.tls_cert) and os.path.exists(self.tls_key)
                 and _run(["openssl", "x509", "-in", self.tls_cert, "-noout",
                           "-checkend", "86400"], check=False).returncode == 0)
        if not valid:
            self._say("generating server certificate for %s" % TLS_HOSTNAME)
            csr = os.path.join(self.tls_dir, "server.csr")
            _run(["openssl", "req", "-new", "-config", cnf, "-newkey", "rsa:2048", "-nodes",
                  "-keyout", self.tls_key, "-out", csr, "-subj", "/CN=%s" % TLS_HOSTNAME],
                 log=log)
            _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                  "-set_serial", "0x" + secrets.token_hex(16), "-days", "825",
                  "-extfile", cnf, "-extensions", "server_ext", "-out", self.tls_cert], log=log)
            os.chmod(self.tls_key, 0o600)
            os.chmod(self.tls_cert, 0o644)
            os.unlink(csr)

    # ------------------------------------------------------------- users
    @staticmethod
    def _local(user):
        return user.split("@", 1)[0].lower()

    def address(self, user):
        return "%s@%s" % (self._local(user), DOMAIN)

    def password_file(self, user):
        return os.path.join(self.secrets_dir, "%s.password" % self._local(user))

    def password(self, user):
        with open(self.password_file(user)) as fh:
            return fh.read()

    def mailbox_path(self, user):
        """The user's Maildir (may not exist before the first delivery)."""
        return os.path.join(self.mail_dir, DOMAIN, self._local(user), "Maildir")

    def _ensure_users(self):
        try:
            with open(self.initial_passwords) as fh:
                initial = json.load(fh)
        except (OSError, ValueError):
            initial = {}
        for u in USERS:
            if u not in initial:
                initial[u] = secrets.token_urlsafe(18)
        _write(self.initial_passwords, json.dumps(initial, indent=1, sort_keys=True), 0o600)
        for u in USERS:
            if not os.path.exists(self.password_file(u)):
                _write(self.password_file(u), initial[u], 0o600)
        self._write_passwd_file()

    def _write_passwd_file(self):
        dv = self.dovecot
        _mkdir(dv.conf_dir, 0o755)
        lines = "".join("%s:{PLAIN}%s::::::\n" % (self.address(u), self.password(u))
                        for u in USERS)
        old = os.stat(dv.passwd_file).st_mtime if os.path.exists(dv.passwd_file) else 0
        gid = grp.getgrnam("dovecot").gr_gid
        if _write(dv.passwd_file, lines, 0o640, 0, gid):
            # Dovecot re-reads the file when (mtime, size) change, checked at
            # most once per second: force a new mtime second, then let the
            # clock pass a second boundary so the next lookup re-stats it.
            new = max(time.time(), old + 1)
            os.utime(dv.passwd_file, (new, new))
            if self.dovecot.is_running():
                time.sleep(1.0 - (time.time() % 1.0) + 0.02)
            return True
        return False

    def set_password(self, user, password):
        """Change a user's password (Dovecot passwd-file + DIR password file)."""
        if any(c in password for c in ":\n\r\0"):
            raise ValueError("password must not contain ':' or line breaks")
        u = self._local(user)
        if u not in USERS:
            raise KeyError(user)
        _write(self.password_file(u), password, 0o600)
        self._write_passwd_file()
        if os.path.exists(self.stack_json):
            self.write_stack_json()

    def reset_passwords(self):
        with open(self.initial_passwords) as fh:
            initial = json.load(fh)
        for u in USERS:
            _write(self.password_file(u), initial[u], 0o600)
        self._write_passwd_file()
        if os.path.exists(self.stack_json):
            self.write_stack_json()

    # ------------------------------------------------------------- queue
    def queue(self):
        """Postfix queue as a list of dicts (postqueue -j)."""
        res = self.postfix.cmd("postqueue", "-j")
        return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]

    def queue_ids(self, queue_name=None):
        """Queue IDs, optionally only of one queue ('hold', 'deferred', 'active', ...)."""
        return [m["queue_id"] for m in self.queue()
                if queue_name is None or m.get("queue_name") == queue_name]

    def release_held(self):
        """Release all held messages and flush the queue. Returns postsuper's output."""
        out = self.postfix.cmd("postsuper", "-H", "ALL").stdout
        self.postfix.cmd("postqueue", "-f")
        return out.strip()

    def delete_held(self):
        return self.postfix.cmd("postsuper", "-d", "ALL", "hold").stdout.strip()

    def flush(self):
        self.postfix.cmd("postqueue", "-f")

    # ------------------------------------------------------- down/status
    def down(self):
        stopped = []
        for svc in reversed(self.services):
            if svc.stop():
                stopped.append(svc.name)
        self._say("stopped: %s" % (", ".join(stopped) or "nothing was running"))
        return stopped

    def status(self):
        st = {}
        for svc in self.services:
            eps = {}
            for e in svc.endpoints():
                name = "%s:%d" % (e[1], e[2]) if e[0] == "tcp" else e[1]
                eps[name] = _endpoint_open(e)
            st[svc.name] = {"running": svc.is_running(), "pid": svc.pid(), "endpoints": eps}
        return st

    def healthy(self):
        return all(s["running"] and all(s["endpoints"].values())
                   for s in self.status().values())

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        pending = [(svc, e) for svc in self.services for e in svc.endpoints()]
        while pending:
            pending = [(svc, e) for svc, e in pending if not _endpoint_open(e)]
            if not pending:
                break
            if time.monotonic() > deadline:
                svc, e = pending[0]
                raise StackError("%s not ready: %s\n--- %s\n%s" % (
                    svc.name, e, svc.log, _tail(svc.log) + _tail(svc.start_log)))
            time.sleep(0.05)

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    # ---------------------------------------------------------------- info
    def info(self):
        return {
            "dir": self.dir,
            "domain": DOMAIN,
            "host": HOST,
            "tls_hostname": TLS_HOSTNAME,
            "ports": {"submission": SUBMISSION_PORT, "submissions": SUBMISSIONS_PORT,
                      "mx": MX_PORT, "imap": IMAP_PORT, "imaps": IMAPS_PORT},
            "ca": self.ca,
            "tls": {"ca": self.ca, "cert": self.tls_cert, "key": self.tls_key},
            "users": {u: {"address": self.address(u), "login": self.address(u),
                          "password": self.password(u),
                          "password_file": self.password_file(u),
                          "maildir": self.mailbox_path(u)} for u in USERS},
            "logs": {svc.name: svc.log for svc in self.services},
            "postfix": self.postfix.info(),
            "dovecot": self.dovecot.info(),
            "faults": {"hold": "+hold", "tempfail": "+tempfail", "reject": "+reject",
                       "tempfail_reply": HOLD_TEMPFAIL_REPLY, "reject_reply": REJECT_REPLY},
        }

    def write_stack_json(self):
        info = self.info()
        _write(self.stack_json, json.dumps(info, indent=2, sort_keys=True) + "\n", 0o600)
        return info

    def env(self):
        i = self.info()
        out = {"MAILSTACK_DIR": self.dir, "MAILSTACK_JSON": self.stack_json,
               "MAILSTACK_HOST": HOST, "MAILSTACK_TLS_HOSTNAME": TLS_HOSTNAME,
               "MAILSTACK_CA": self.ca, "MAILSTACK_DOMAIN": DOMAIN,
               "MAILSTACK_POSTFIX_CONFIG_DIR": self.postfix.conf_dir}
        for k, v in i["ports"].items():
            out["MAILSTACK_%s_PORT" % k.upper()] = str(v)
        for u, d in i["users"].items():
            out["MAILSTACK_%s_ADDRESS" % u.upper()] = d["address"]
            out["MAILSTACK_%s_PASSWORD_FILE" % u.upper()] = d["password_file"]
        return out


# --------------------------------------------------------------------------
# Config templates
# --------------------------------------------------------------------------
OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = {hostname}
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:{hostname}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

# {{ }} are literal braces for str.format
DOVECOT_CONF = """\
# generated by tests/mailstack.py -- do not edit
instance_name = {instance}
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log}
log_timestamp = "%Y-%m-%d %H:%M:%S.%{{usecs}} "
hostname = {hostname}
protocols = imap lmtp
listen = {host}
shutdown_clients = yes

ssl = yes
ssl_cert = <{tls_cert}
ssl_key = <{tls_key}
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_username_format = %Lu
auth_verbose = yes
auth_cache_size = 0
recipient_delimiter = +

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {passwd_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {passwd_file}
  default_fields = uid={vmail} gid={vmail} home={mail_root}/%Ld/%Ln
}}
first_valid_uid = {vmail_uid}
mail_location = maildir:~/Maildir

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}

mail_plugins = $mail_plugins quota
plugin {{
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = *:storage={quota}
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}

protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@{domain}
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp-postfix {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

POSTFIX_MAIN_CF = """\
# generated by tests/mailstack.py -- do not edit
compatibility_level = 3.6
queue_directory = {queue_dir}
data_directory = {data_dir}
maillog_file = {log}
maillog_file_prefixes = {log_dir}
mail_owner = postfix
setgid_group = postdrop

myhostname = {hostname}
mydomain = {domain}
myorigin = $mydomain
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
append_dot_mydomain = no
biff = no
smtpd_banner = $myhostname ESMTP
delay_logging_resolution_limit = 3

virtual_mailbox_domains = {domain}
virtual_mailbox_maps = texthash:{vmailbox}
virtual_transport = lmtp:unix:{lmtp_socket}
recipient_delimiter = +

# retry fast: greylisting, held mail and tempfails resolve in seconds
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200

smtpd_tls_chain_files = {tls_key}, {tls_cert}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = none
lmtp_tls_security_level = none

smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_auth_enable = no

# default (inbound) policy; submission services override
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
"""

POSTFIX_MASTER_CF = """\
# generated by tests/mailstack.py -- do not edit
# service   type  private unpriv  chroot  wakeup  maxproc command + args
{host}:{sub_port} inet n      -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{recipient_access},permit_sasl_authenticated,reject
  -o content_filter=smtp:[{host}]:{mx_port}
{host}:{subs_port} inet n     -       n       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{recipient_access},permit_sasl_authenticated,reject
  -o content_filter=smtp:[{host}]:{mx_port}
{host}:{mx_port} inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/mx
  -o myhostname={mx_hostname}
  -o smtpd_sasl_auth_enable=no
  -o smtpd_relay_restrictions=reject_unauth_destination
  -o smtpd_recipient_restrictions=
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# regexp tables are case-insensitive by default
RECIPIENT_ACCESS_MAP = """\
# generated by tests/mailstack.py -- fault knobs by recipient local part
/^[^@]*\\+hold([-._][^@]*)?@/         HOLD held by mailstack fault knob
/^[^@]*\\+tempfail([-._][^@]*)?@/     {tempfail}
/^[^@]*\\+reject([-._][^@]*)?@/       {reject}
"""


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def _summary(stack):
    i = stack.info()
    p = i["ports"]
    lines = [
        "mail stack in %s (stack.json: %s)" % (stack.dir, stack.stack_json),
        "  submission  %s:%d STARTTLS   submissions %s:%d TLS   mx %s:%d"
        % (HOST, p["submission"], HOST, p["submissions"], HOST, p["mx"]),
        "  imap        %s:%d STARTTLS   imaps       %s:%d TLS"
        % (HOST, p["imap"], HOST, p["imaps"]),
        "  TLS: verify as %r with CA %s" % (TLS_HOSTNAME, stack.ca),
    ]
    for u, d in i["users"].items():
        lines.append("  user %-20s password file %s" % (d["address"], d["password_file"]))
    lines.append("  logs: %s" % ", ".join(i["logs"].values()))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="loopback mail stack for check_email_roundtrip tests")
    ap.add_argument("command", choices=["up", "down", "status", "env"])
    ap.add_argument("--dir", default=None,
                    help="state directory (default: $MAILSTACK_DIR or %s)" % DEFAULT_DIR)
    args = ap.parse_args(argv)
    stack = MailStack(args.dir)
    try:
        if args.command == "up":
            stack.up()
            print(_summary(stack))
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            st = stack.status()
            for name, s in st.items():
                print("%-8s %s pid=%s" % (name, "running" if s["running"] else "STOPPED", s["pid"]))
                for ep, ok in s["endpoints"].items():
                    print("    %-45s %s" % (ep, "ok" if ok else "DOWN"))
            return 0 if stack.healthy() else 1
        elif args.command == "env":
            if not os.path.exists(stack.password_file(USERS[0])):
                raise StackError("no stack in %s yet: run 'up' first" % stack.dir)
            for k, v in stack.env().items():
                print("export %s=%s" % (k, shlex.quote(v)))
    except StackError as e:
        print("mailstack: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
