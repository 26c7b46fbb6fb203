#!/usr/bin/env python3
"""A private, loopback-only mail stack for testing check_email_roundtrip.

    python3 tests/mailstack.py up|down|status|env [--dir DIR]

DIR defaults to $MAILSTACK_DIR, else DEFAULT_DIR below.  Must run as root
(Debian 12, no systemd needed).  Standard library only.

Mail path:

    client -> Postfix submission 127.0.0.1:10587 (STARTTLS required, AUTH)
           or Postfix submissions 127.0.0.1:10465 (implicit TLS, AUTH)
              SASL via the Dovecot auth socket
              rspamd milter (127.0.0.1:10332) DKIM-signs example.test (s2026)
           -> content_filter smtp:[127.0.0.1]:10025
           -> Postfix inbound "MX" 127.0.0.1:10025 (no auth, example.test only)
              rspamd milter verifies SPF, DKIM, DMARC and adds ONE
              Authentication-Results (authserv-id mx.example.test) on top;
              foreign A-R headers are kept; nothing is rejected/quarantined
           -> LMTP (unix socket) -> Dovecot (sieve, quota) -> Maildir
              a global sieve_before script files "+junk" mail into Junk
    client <- Dovecot IMAP 127.0.0.1:10143 (STARTTLS) and IMAPS 127.0.0.1:10993
    EXPIRED-certificate twins (same service, cert from the stack CA for
    localhost, notAfter in the past: DIR/tls/expired.pem):
              Postfix submissions 127.0.0.1:10466 (implicit TLS, AUTH, same
              restrictions as 10465)
              IMAPS 127.0.0.1:10994 = auxd's TLS front -> Dovecot IMAP 10143
              (Dovecot 2.3 cannot give one listener its own certificate)
    rspamd -> dnsmasq 127.0.0.1:10053 (UDP+TCP): example.test only, rest NXDOMAIN
              example.test TXT                "v=spf1 ip4:127.0.0.1 -all"
              s2026._domainkey.example.test   the key in DIR/dkim (made at first up)
              _dmarc.example.test TXT         "v=DMARC1; p=quarantine; rua=..."
              mx./mail.example.test A 127.0.0.1, example.test MX mx.example.test

The TLS server certificate is issued by a private CA (DIR/tls/ca.pem) for
DNS:localhost only: connect to "localhost" to verify OK; connecting by
127.0.0.1 is the "certificate does not match host name" case.

Fault knobs on the submission ports (recipient local part, case-insensitive,
the tag may be followed by "-", "." or "_" and anything, e.g. probe+hold-123):
    +hold      accepted (250) but kept in the hold queue -> release_held()
    +tempfail  451 4.7.0 Rate limit exceeded, try again later   (at RCPT)
    +reject    550 5.7.1 Recipient rejected by policy          (at RCPT)
    +forge     delivered, with a forged all-pass Authentication-Results
               (authserv-id mx.example.test) prepended at submission: it
               ends up right below the receiver's real one
    +junk      delivered into the Junk folder (\\Junk special-use) instead of
               INBOX, by a global Dovecot sieve_before script (envelope
               :detail "to" "junk"; also junk-*, junk.*, junk_*)
unknown users: the submission ports accept any local part @example.test
(smtpd_reject_unlisted_recipient=no); the inbound MX answers
    550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown
    in virtual mailbox table
and Postfix sends a DSN (multipart/report, message/delivery-status, the
original message) to the envelope sender at once, e.g. into probe's INBOX.
plus set_password()/reset_passwords().

More fault knobs (exact replies as seen on the wire; stack.json "faults"):
    full@example.test   over quota at RCPT TO on the submission ports:
               552 5.2.2 <full@example.test>: Recipient address rejected: Mailbox is full
               (Dovecot quota-status -p postfix as check_policy_service,
               unix socket DIR/run/quota-status-postfix; full's userdb
               quota_rule is *:storage=1K and up() stores an 8 KB filler in
               its Maildir when it is not over quota; +detail too; other
               users unaffected (quota-status answers DUNNO)
    +greylist  (recipient, inbound MX 10025 only) deferred at RCPT with
               450 4.7.1 <probe+greylist@example.test>: Recipient address
               rejected: Greylisted, try again later
               (policy action "defer_if_permit 4.7.1 Greylisted, try again
               later" from auxd on 127.0.0.1:10028) until the message
               (client, sender, recipient, size) was first seen N s ago; the
               relay retries about every 1 s, so it reaches INBOX N+0.2..N+2 s
               after submission.  set_greylist_seconds(n) (default 3; 0 =
               off; DEFAULT/None = back to 3) applies to the next message;
               greylist_seconds() reads it.  Two identical messages (same
               sender, recipient and size) in flight share one timer.
    noauth@example.test  SMTP AUTH refused although the password is right:
               535 5.7.8 Error: authentication failed: (reason unavailable)
               (same text as a wrong password; Dovecot deny passdb keyed
               "<service>/<user>", listed for service smtp only); IMAP
               LOGIN with the same password WORKS
    +reject553 (sender, submission ports) refused at MAIL FROM:
               553 5.7.1 <probe+reject553@example.test>: Sender address
               rejected: not owned by user
               (check_sender_access; smtpd_delay_reject=no on those ports)
    127.0.0.1:10466, 127.0.0.1:10994  expired certificate: Python's ssl with
               DIR/tls/ca.pem says "certificate verify failed: certificate
               has expired" (verify_code 10); a client that does not verify
               can log in and submit as on 10465/10993

IMAP helpers (IMAPS, CA-verified as "localhost"), for test setup/isolation:
    append_message(user, folder, raw, internaldate) -> UID (APPENDUID)
    folder_uids(user, folder, search="ALL")         -> [UID, ...]
    delete_all(user, folder)                        -> number expunged
    imap(user)                                      logged-in imaplib client

DNS knobs (each applies to the next message; dnsmasq is restarted and the
answer checked before they return):
    set_dns(spf=..., dkim=..., dmarc=...)   str / list / None / KEEP / DEFAULT
    set_txt(name, value)                     any name (include chains, other selectors)
    reset_dns(), dns_records(), dns_query(name, qtype)
    dkim_public_txt(), dkim_other_public_txt() (a valid wrong key), DKIM_REVOKED

Adding a daemon = one more Service subclass in MailStack.services (order =
start order: dnsmasq, rspamd, dovecot, auxd, postfix), with packages/write_config/
start/reload/endpoints/info.  auxd is the stack's own stdlib Python daemon
(DIR/aux/auxd.py from AUXD_SCRIPT, pidfile DIR/aux/auxd.pid, log
DIR/log/auxd.log, runs as nobody): greylisting policy + expired-cert IMAPS.
"""

import argparse
import base64
import contextlib
import datetime
import hashlib
import imaplib
import json
import os
import pwd
import grp
import re
import secrets
import shlex
import signal
import socket
import ssl
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

def _port_base():
    """MAILSTACK_PORT_BASE (default 10000): every port is base + a fixed offset
    (10587, 10465, ... by default; 20587, 20465, ... with 20000), so a second
    stack can run beside the first."""
    text = os.environ.get("MAILSTACK_PORT_BASE", "10000")
    try:
        base = int(text)
    except ValueError:
        raise SystemExit("MAILSTACK_PORT_BASE must be a number, not %r" % text)
    if not 1024 <= base <= 64500:
        raise SystemExit("MAILSTACK_PORT_BASE out of range 1024..64500: %d" % base)
    return base


PORT_BASE = _port_base()
SUBMISSION_PORT = PORT_BASE + 587     # Postfix, STARTTLS required, AUTH
SUBMISSIONS_PORT = PORT_BASE + 465    # Postfix, implicit TLS, AUTH
MX_PORT = PORT_BASE + 25              # Postfix inbound, no auth, example.test only
IMAP_PORT = PORT_BASE + 143           # Dovecot IMAP (STARTTLS offered)
IMAPS_PORT = PORT_BASE + 993          # Dovecot IMAPS
# Same services, but the TLS certificate presented is EXPIRED (signed by the
# stack CA, for DNS:localhost, notAfter in the past): Postfix smtpd with its
# own smtpd_tls_chain_files, and auxd's TLS front to Dovecot IMAP.
SUBMISSIONS_EXPIRED_PORT = PORT_BASE + 466   # Postfix, implicit TLS, AUTH, expired cert
IMAPS_EXPIRED_PORT = PORT_BASE + 994         # IMAPS (auxd TLS -> Dovecot IMAP), expired cert
GREYLIST_POLICY_PORT = PORT_BASE + 28        # auxd: Postfix policy service (greylisting)

USERS = ("probe", "other", "full", "noauth")  # local parts @DOMAIN
QUOTA_LIMIT = "1G"
# "full": mailbox over quota.  Its userdb quota_rule overrides QUOTA_LIMIT and
# up() stores QUOTA_FULL_FILLER_BYTES straight into its Maildir (APPEND/LMTP
# would be refused) when it is not over quota; Dovecot's quota-status policy
# service on the submission ports answers QUOTA_FULL_REPLY at RCPT TO.
QUOTA_FULL_USER = "full"
QUOTA_FULL_LIMIT = "1K"
QUOTA_FULL_FILLER_BYTES = 8192
QUOTA_STATUS_OVERQUOTA = "552 5.2.2 Mailbox is full"     # Dovecot's action
# what the client sees (Postfix inserts the address and "Recipient address
# rejected:"); %s = the recipient as given, e.g. full+x@example.test
QUOTA_FULL_REPLY = ("552 5.2.2 <%s>: Recipient address rejected: Mailbox is full")
# "noauth": right password, but SMTP AUTH is refused (a Dovecot deny passdb
# keyed on "<service>/<user>" lists it for service smtp only); IMAP works.
NOAUTH_USER = "noauth"
NOAUTH_SERVICES = ("smtp",)
# Dovecot gives Postfix no reason for a deny passdb hit; a wrong password
# for noauth gets the same reply (the deny passdb is asked first).
NOAUTH_REPLY = "535 5.7.8 Error: authentication failed: (reason unavailable)"
USER_EXTRA_FIELDS = {QUOTA_FULL_USER: "userdb_quota_rule=*:storage=" + QUOTA_FULL_LIMIT}

DEFAULT_DIR = "/var/tmp/check_email_roundtrip-stack"
VMAIL_USER = "vmail"

POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration"
POLICY_RC_D = "/usr/sbin/policy-rc.d"

HOLD_TEMPFAIL_REPLY = "451 4.7.0 Rate limit exceeded, try again later"
REJECT_REPLY = "550 5.7.1 Recipient rejected by policy"
# sender <user>+reject553@ (also -*, .*, _*) at MAIL FROM on the submission ports
SENDER_REJECT_DETAIL = "reject553"
SENDER_REJECT_ACTION = "553 5.7.1 not owned by user"     # the access map's value
# what the client sees; %s = the sender as given
SENDER_REJECT_REPLY = "553 5.7.1 <%s>: Sender address rejected: not owned by user"
# recipient <user>+greylist@ (also -*, .*, _*) at the inbound MX: deferred until
# the message (client, sender, recipient, size) was first seen N s ago
GREYLIST_DETAIL = "greylist"
GREYLIST_DEFAULT_SECONDS = 3
GREYLIST_ACTION = "defer_if_permit 4.7.1 Greylisted, try again later"
GREYLIST_REPLY = ("450 4.7.1 <%s>: Recipient address rejected: "
                  "Greylisted, try again later")
# an entry whose message has not come back within N + this is started afresh
GREYLIST_STALE_SECONDS = 30
JUNK_DETAIL = "junk"        # probe+junk@example.test -> Junk (sieve_before)
JUNK_FOLDER = "Junk"
UNKNOWN_USER = "nobody@" + DOMAIN     # any local part not in USERS will do
# what the inbound MX says at RCPT (Postfix smtpd_reject_unlisted_recipient)
UNKNOWN_USER_REPLY = ("550 5.1.1 <%s>: Recipient address rejected: User unknown "
                      "in virtual mailbox table")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

# DNS (dnsmasq), authoritative for DOMAIN only: everything else is NXDOMAIN
DNS_PORT = PORT_BASE + 53     # UDP and TCP
MAIL_HOSTS = (MX_HOSTNAME, "mail." + DOMAIN)   # A records -> HOST
SPF_NAME = DOMAIN
DMARC_NAME = "_dmarc." + DOMAIN
DEFAULT_SPF = "v=spf1 ip4:127.0.0.1 -all"     # the MX sees the relay from 127.0.0.1
DEFAULT_DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@" + DOMAIN
DKIM_SELECTOR = "s2026"
DKIM_NAME = "%s._domainkey.%s" % (DKIM_SELECTOR, DOMAIN)
DKIM_BITS = 2048
DKIM_REVOKED = "v=DKIM1; p="                  # RFC 6376 3.6.1: empty p= = revoked key
# "+forge": the submission server PREPENDs this all-pass header, claiming the
# receiver's own authserv-id; the real one (rspamd, inbound pass) lands above.
FORGED_AUTH_RESULTS = ("Authentication-Results: %s; spf=pass smtp.mailfrom=%s; "
                       "dkim=pass header.d=%s header.s=%s; dmarc=pass header.from=%s"
                       % (MX_HOSTNAME, DOMAIN, DOMAIN, DKIM_SELECTOR, DOMAIN))

# rspamd: one milter worker signs (authenticated submissions) and verifies
# (the inbound MX pass).  Not 11332/11334 so a system rspamd cannot collide.
RSPAMD_MILTER_PORT = PORT_BASE + 332
RSPAMD_CONTROLLER_PORT = PORT_BASE + 334
RSPAMD_USER = "_rspamd"
# The first start compiles the hyperscan regex cache (~10 s, high RSS).
RSPAMD_START_TIMEOUT = 120.0
AUTHSERV_ID = MX_HOSTNAME   # rspamd takes it from the MX smtpd's $myhostname ({j})
# Modules that want the internet or Redis (or would slow every scan down
# with lookups that can only fail here).
RSPAMD_DISABLED_MODULES = (
    "rbl", "fuzzy_check", "asn", "phishing", "neural", "ratelimit", "greylist",
    "history_redis", "url_redirector", "replies", "reputation", "bimi", "multimap",
    "whitelist", "mx_check", "rspamd_update", "emails", "dcc", "antivirus",
    "external_services", "clickhouse", "elastic", "metadata_exporter",
    "metric_exporter", "p0f", "spamtrap", "aws_s3")


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
    if e[0] == "tcp":
        return _tcp_open(e[1], e[2])
    if e[0] == "dns":
        return _dns_open(e[1], e[2])
    if e[0] == "milter":
        return _milter_open(e[1], e[2])
    if e[0] == "http":
        return _http_ping(e[1], e[2])
    return _unix_open(e[1])


def _endpoint_name(e):
    if e[0] == "tcp":
        return "%s:%d" % (e[1], e[2])
    if e[0] in ("dns", "milter", "http"):
        return "%s %s:%d" % (e[0], e[1], e[2])
    return e[1]


def _endpoint_busy(e):
    """Is a port of a not-running service already taken by something else?"""
    if e[0] in ("tcp", "milter", "http"):
        return _tcp_open(e[1], e[2])
    if e[0] == "dns":
        return _tcp_open(e[1], e[2]) or _udp_busy(e[1], e[2])
    return False


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


_DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
              "AAAA": 28}
_DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED"}


def _dns_name(data, pos):
    """Decode a (possibly compressed) domain name; returns (name, next_pos)."""
    labels, end, hops = [], None, 0
    while True:
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            hops += 1
            if hops > 64:
                raise ValueError("DNS name compression loop")
            continue
        pos += 1
        if n == 0:
            break
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
    return ".".join(labels), (end if end is not None else pos)


def dns_query(name, qtype="TXT", server=(HOST, DNS_PORT), timeout=2.0, tcp=False):
    """Tiny stdlib DNS client (enough to check the stack's dnsmasq).

    Returns (rcode, answers): rcode "NOERROR", "NXDOMAIN", ...; answers of
    the asked type: TXT -> str (the record's strings joined, as SPF/DKIM/
    DMARC verifiers read it), A/AAAA -> address, MX -> (preference, host),
    others -> raw bytes.  Raises OSError on time-out / no answer."""
    qt = _DNS_TYPES[qtype.upper()]
    qid = secrets.randbits(16)
    q = b"".join(bytes([len(lab)]) + lab for lab in
                 (x.encode("ascii") for x in name.rstrip(".").split(".") if x)) + b"\0"
    query = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" \
        + q + qt.to_bytes(2, "big") + b"\x00\x01"
    if tcp:
        with socket.create_connection(server, timeout=timeout) as s:
            s.sendall(len(query).to_bytes(2, "big") + query)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                chunk = s.recv(65535)
                if not chunk:
                    raise OSError("DNS TCP connection closed early")
                buf += chunk
            data = buf[2:2 + int.from_bytes(buf[:2], "big")]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect(server)
            s.send(query)
            while True:
                data = s.recv(65535)
                if data[:2] == query[:2]:
                    break
        if data[2] & 0x02:          # truncated: retry over TCP
            return dns_query(name, qtype, server, timeout, tcp=True)
    rcode = _DNS_RCODES.get(data[3] & 0x0F, str(data[3] & 0x0F))
    qd, an = int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big")
    pos = 12
    for _ in range(qd):
        _, pos = _dns_name(data, pos)
        pos += 4
    answers = []
    for _ in range(an):
        _, pos = _dns_name(data, pos)
        rtype = int.from_bytes(data[pos:pos + 2], "big")
        rdlen = int.from_bytes(data[pos + 8:pos + 10], "big")
        rdata, rstart = data[pos + 10:pos + 10 + rdlen], pos + 10
        pos += 10 + rdlen
        if rtype != qt:
            continue
        if rtype == 16:
            parts, i = [], 0
            while i < len(rdata):
                parts.append(rdata[i + 1:i + 1 + rdata[i]].decode("utf-8", "replace"))
                i += 1 + rdata[i]
            answers.append("".join(parts))
        elif rtype in (1, 28):
            answers.append(socket.inet_ntop(socket.AF_INET if rtype == 1 else socket.AF_INET6,
                                            rdata))
        elif rtype == 15:
            answers.append((int.from_bytes(rdata[:2], "big"), _dns_name(data, rstart + 2)[0]))
        else:
            answers.append(rdata)
    return rcode, answers


def _txt_chunks(value):
    """A TXT value as character-strings of at most 255 bytes (RFC 1035 3.3.14;
    verifiers concatenate them)."""
    data = value.encode("ascii")
    return [data[i:i + 255].decode() for i in range(0, len(data), 255)] or [""]


def _dns_open(host, port, timeout=0.3):
    """Does a DNS server answer (anything) on host:port over UDP and TCP?"""
    try:
        dns_query(DOMAIN, "SOA", (host, port), timeout=timeout)
        dns_query(DOMAIN, "SOA", (host, port), timeout=timeout, tcp=True)
        return True
    except (OSError, ValueError, IndexError):
        return False


def _milter_open(host, port, timeout=0.5):
    """Does a milter answer option negotiation (SMFIC_OPTNEG) on host:port?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            body = b"O" + (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") \
                + (0x1FFFFF).to_bytes(4, "big")
            s.sendall(len(body).to_bytes(4, "big") + body)
            head = b""
            while len(head) < 5:
                chunk = s.recv(5 - len(head))
                if not chunk:
                    return False
                head += chunk
            ok = head[4:5] == b"O"
            try:
                s.sendall((1).to_bytes(4, "big") + b"Q")     # SMFIC_QUIT
            except OSError:
                pass
            return ok
    except OSError:
        return False


def _http_ping(host, port, timeout=0.5):
    """Does an rspamd controller answer GET /ping with "pong"?  (A bare TCP
    connect would log an "unexpected EOF" error in rspamd each time.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if b"pong" in data:
                    return True
            return False
    except OSError:
        return False


def _udp_busy(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class _Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "MailStack." + self.name


KEEP = _Sentinel("KEEP")
DEFAULT = _Sentinel("DEFAULT")


# --------------------------------------------------------------------------
# IMAP client bits (MailStack.imap/append_message/folder_uids/delete_all)
# --------------------------------------------------------------------------
class _IMAPS(imaplib.IMAP4_SSL):
    """IMAPS to HOST:IMAPS_PORT, certificate checked as TLS_HOSTNAME ("localhost"
    may resolve to ::1 first, where nothing listens)."""

    def __init__(self, ssl_context, timeout=30.0):
        self._mailstack_timeout = timeout
        super().__init__(TLS_HOSTNAME, IMAPS_PORT, ssl_context=ssl_context)

    def _create_socket(self, timeout=None):
        sock = socket.create_connection((HOST, self.port), timeout or self._mailstack_timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=TLS_HOSTNAME)


def _imap_utf7(name):
    """Modified UTF-7 (RFC 3501 5.1.3) for non-ASCII mailbox names."""
    out, buf = [], []

    def flush():
        if buf:
            b64 = base64.b64encode("".join(buf).encode("utf-16-be"))
            out.append("&" + b64.decode().rstrip("=").replace("/", ",") + "-")
            del buf[:]
    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            buf.append(c)
    flush()
    return "".join(out)


def _imap_mailbox(name):
    """A mailbox name as an IMAP quoted string (imaplib sends arguments as
    they are).  Already quoted names are left alone."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name
    return '"%s"' % _imap_utf7(name).replace("\\", "\\\\").replace('"', '\\"')


def _imap_text(data):
    return " ".join(d.decode(errors="replace") if isinstance(d, bytes) else str(d)
                    for d in (data or []) if d is not None)


# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------
class Service:
    """One daemon.  Subclasses fill in the specifics."""
    name = "?"
    packages = ()
    preseed = ()          # debconf-set-selections lines
    start_hint = ""
    ready_timeout = START_TIMEOUT   # budget for endpoints() to open after start

    def __init__(self, stack):
        self.stack = stack
        # every daemon logs to <name>.log, its start-up output to <name>-start.log
        self.log = os.path.join(stack.log_dir, "%s.log" % self.name)
        self.start_log = os.path.join(stack.log_dir, "%s-start.log" % self.name)

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
        """[('tcp'|'dns'|'milter'|'http', host, port) | ('unix', path)] that must
        be ready ('dns': answers a query over UDP and TCP; 'milter': answers
        OPTNEG; 'http': rspamd controller answers /ping)."""
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
            # rspamd's parent returns only after loading its config (about
            # 10 s on a first start): allow for it, but never hang forever.
            timeout = max(60.0, self.ready_timeout)
            try:
                rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, close_fds=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StackError("%s: start command still running after %.0fs: %s\n%s"
                                 % (self.name, timeout, " ".join(cmd), _tail(self.log)))
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
        # deny passdb, keyed "<auth service>/<user>" (the noauth knob)
        self.deny_file = os.path.join(self.conf_dir, "deny-users")
        self.state_dir = os.path.join(self.conf_dir, "state")
        self.base_dir = s.run_dir
        self.auth_socket = os.path.join(self.base_dir, "auth-postfix")
        self.lmtp_socket = os.path.join(self.base_dir, "lmtp-postfix")
        # quota-status -p postfix, a Postfix policy service (the full knob)
        self.quota_socket = os.path.join(self.base_dir, "quota-status-postfix")
        # global sieve_before script (+junk -> Junk), precompiled at up: the
        # LMTP process runs as vmail and cannot write a binary next to it
        self.sieve_dir = os.path.join(self.conf_dir, "sieve")
        self.sieve_before = os.path.join(self.sieve_dir, "before.sieve")
        self.sieve_before_bin = os.path.join(self.sieve_dir, "before.svbin")

    def pidfile(self):
        return os.path.join(self.base_dir, "master.pid")

    def matches(self, pid):
        cmd = _proc_cmdline(pid)
        return bool(cmd) and cmd[0].endswith("dovecot") and self.conf in cmd

    def endpoints(self):
        return [("tcp", HOST, IMAP_PORT), ("tcp", HOST, IMAPS_PORT),
                ("unix", self.auth_socket), ("unix", self.lmtp_socket),
                ("unix", self.quota_socket)]

    def info(self):
        return {"config": self.conf, "base_dir": self.base_dir,
                "passwd_file": self.passwd_file, "lmtp_socket": self.lmtp_socket,
                "auth_socket": self.auth_socket, "sieve_before": self.sieve_before,
                "quota_status_socket": self.quota_socket, "deny_file": self.deny_file}

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
            quota=QUOTA_LIMIT, hostname=TLS_HOSTNAME, sieve_before=self.sieve_before,
            deny_file=self.deny_file, quota_reply=QUOTA_STATUS_OVERQUOTA)
        # before the config that names it: a missing passwd-file fails every login
        self._write_deny_file()     # re-read by Dovecot when it changes: no reload
        changed = _write(self.conf, conf, 0o644)
        self._write_sieve_before()      # read at each delivery: no reload needed
        return changed

    def _write_deny_file(self):
        gid = grp.getgrnam("dovecot").gr_gid
        lines = "".join("%s/%s@%s:\n" % (svc, NOAUTH_USER, DOMAIN) for svc in NOAUTH_SERVICES)
        return _write(self.deny_file, "# generated by tests/mailstack.py: <service>/<user>, "
                      "refused even with the right password\n" + lines, 0o640, 0, gid)

    def doveadm(self, *args, check=True):
        """Run doveadm against this instance."""
        return _run(["doveadm", "-c", self.conf] + list(args), check=check)

    def _write_sieve_before(self):
        """Write the global sieve_before script and compile it with sievec
        when the binary is missing or stale.  Nothing needs a reload: Pigeonhole
        opens the script (and its .svbin) at every delivery."""
        _mkdir(self.sieve_dir, 0o755)
        script = SIEVE_BEFORE.format(detail=JUNK_DETAIL, folder=JUNK_FOLDER)
        changed = _write(self.sieve_before, script, 0o644)
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
            tmp = "%s.tmp.%d" % (self.sieve_before_bin, os.getpid())
            try:
                _run(["sievec", "-c", self.conf, self.sieve_before, tmp],
                     log=os.path.join(self.stack.log_dir, "sievec.log"))
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.sieve_before_bin)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return changed

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
        self.recipient_access = os.path.join(self.conf_dir, "recipient_access.regexp")
        self.sender_access = os.path.join(self.conf_dir, "sender_access.regexp")
        self.greylist_access = os.path.join(self.conf_dir, "greylist_access.regexp")
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
                ("tcp", HOST, MX_PORT), ("tcp", HOST, SUBMISSIONS_EXPIRED_PORT)]

    def info(self):
        return {"config_dir": self.conf_dir, "queue_dir": self.queue_dir,
                "recipient_access": self.recipient_access,
                "sender_access": self.sender_access,
                "greylist_access": self.greylist_access}

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
            mx_port=MX_PORT, mx_hostname=MX_HOSTNAME,
            milter="inet:%s:%d" % (HOST, RSPAMD_MILTER_PORT),
            sender_access=self.sender_access, greylist_access=self.greylist_access,
            quota_socket=dv.quota_socket, greylist_port=GREYLIST_POLICY_PORT,
            subs_expired_port=SUBMISSIONS_EXPIRED_PORT,
            expired_cert=s.expired_cert, expired_key=s.expired_key)
        changed = False
        changed |= _write(os.path.join(self.conf_dir, "main.cf"), POSTFIX_MAIN_CF.format(**fmt))
        changed |= _write(os.path.join(self.conf_dir, "master.cf"), POSTFIX_MASTER_CF.format(**fmt))
        changed |= _write(self.recipient_access, RECIPIENT_ACCESS_MAP.format(
            tempfail=HOLD_TEMPFAIL_REPLY, reject=REJECT_REPLY, forged=FORGED_AUTH_RESULTS))
        changed |= _write(self.sender_access, SENDER_ACCESS_MAP.format(
            detail=SENDER_REJECT_DETAIL, reply=SENDER_REJECT_ACTION))
        changed |= _write(self.greylist_access, GREYLIST_ACCESS_MAP.format(
            detail=GREYLIST_DETAIL))
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


class Dnsmasq(Service):
    """DNS for DOMAIN on HOST:DNS_PORT (UDP+TCP); everything else NXDOMAIN.

    The published TXT records live in DIR/dns/records.json (see
    MailStack.set_dns/set_txt); dnsmasq.conf is generated from it."""
    name = "dnsmasq"
    packages = ("dnsmasq-base",)

    def __init__(self, stack):
        super().__init__(stack)
        s = stack
        self.conf_dir = os.path.join(s.dir, "dns")
        self.conf = os.path.join(self.conf_dir, "dnsmasq.conf")
        self.records_file = os.path.join(self.conf_dir, "records.json")

    def pidfile(self):
        return os.path.join(self.conf_dir, "dnsmasq.pid")

    def matches(self, pid):
        cmd = _proc_cmdline(pid)
        return bool(cmd) and os.path.basename(cmd[0]) == "dnsmasq" \
            and ("--conf-file=" + self.conf) in cmd

    def endpoints(self):
        return [("dns", HOST, DNS_PORT)]

    def info(self):
        return {"host": HOST, "port": DNS_PORT, "nameserver": "%s:%d" % (HOST, DNS_PORT),
                "config": self.conf, "records_file": self.records_file, "log": self.log,
                "a": {h: HOST for h in MAIL_HOSTS}, "mx": {DOMAIN: [10, MX_HOSTNAME]},
                "txt": self.stack.dns_records()}

    @staticmethod
    def _quote(chunk):
        return '"%s"' % chunk.replace("\\", "\\\\").replace('"', '\\"')

    def write_config(self):
        _mkdir(self.conf_dir, 0o755)
        lines = []
        for name, values in sorted(self.stack.dns_records().items()):
            for value in values:
                lines.append("txt-record=%s,%s" % (name, ",".join(
                    self._quote(c) for c in _txt_chunks(value))))
        conf = DNSMASQ_CONF.format(
            host=HOST, port=DNS_PORT, pidfile=self.pidfile(), log=self.log,
            domain=DOMAIN, mx=MX_HOSTNAME,
            hosts="".join("host-record=%s,%s\n" % (h, HOST) for h in MAIL_HOSTS),
            txt="".join(line + "\n" for line in lines))
        return _write(self.conf, conf)

    def start(self):
        self.clear_stale_pidfile()
        self._spawn(["dnsmasq", "--conf-file=" + self.conf], self.start_log)

    def reload(self):
        # SIGHUP re-reads hosts files only, not txt-record lines: restart.
        self.stop()
        self.start()
        self.stack.wait_ready(services=[self])


class Rspamd(Service):
    """rspamd as a milter: DKIM-signs authenticated submissions, verifies
    SPF/DKIM/DMARC on the inbound MX pass and adds Authentication-Results.

    Private top-level config including the packaged common.conf; the
    packaged module files include $LOCAL_CONFDIR/local.d/<module>.conf, and
    LOCAL_CONFDIR, DBDIR, RUNDIR, LOGDIR are redefined by --var to point into
    the stack directory."""
    name = "rspamd"
    packages = ("rspamd",)
    ready_timeout = RSPAMD_START_TIMEOUT

    def __init__(self, stack):
        super().__init__(stack)
        s = stack
        self.root = os.path.join(s.dir, "rspamd")
        self.conf = os.path.join(self.root, "rspamd.conf")
        self.local_d = os.path.join(self.root, "local.d")
        self.override_d = os.path.join(self.root, "override.d")
        self.db_dir = os.path.join(self.root, "db")
        # holds the control socket: keep it short (unix socket path limit)
        self.run_dir = os.path.join(s.short_dir, "rspamd-run")

    def pidfile(self):
        return os.path.join(self.run_dir, "rspamd.pid")

    def matches(self, pid):
        # rspamd rewrites its command line ("rspamd: main process"), so
        # check the binary and that it holds our log file open.
        try:
            if os.path.basename(os.readlink("/proc/%d/exe" % pid)) != "rspamd":
                return False
            fd_dir = "/proc/%d/fd" % pid
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
        return [("milter", HOST, RSPAMD_MILTER_PORT), ("http", HOST, RSPAMD_CONTROLLER_PORT)]

    def info(self):
        return {"milter_port": RSPAMD_MILTER_PORT,
                "milter": "inet:%s:%d" % (HOST, RSPAMD_MILTER_PORT),
                "controller_port": RSPAMD_CONTROLLER_PORT, "log": self.log,
                "config": self.conf, "local_d": self.local_d, "authserv_id": AUTHSERV_ID}

    def command(self):
        return ["rspamd", "-c", self.conf, "-u", RSPAMD_USER, "-g", RSPAMD_USER,
                "--var=LOCAL_CONFDIR=" + self.root, "--var=DBDIR=" + self.db_dir,
                "--var=RUNDIR=" + self.run_dir, "--var=LOGDIR=" + self.stack.log_dir]

    def write_config(self):
        s = self.stack
        ru = pwd.getpwnam(RSPAMD_USER)
        _mkdir(self.root, 0o755)
        _mkdir(self.local_d, 0o755)
        _mkdir(self.override_d, 0o755)
        _mkdir(self.db_dir, 0o750, ru.pw_uid, ru.pw_gid)
        _mkdir(self.run_dir, 0o750, ru.pw_uid, ru.pw_gid)
        if not os.path.exists(self.log):
            _write(self.log, "", 0o640)
        os.chown(self.log, ru.pw_uid, ru.pw_gid)
        fmt = dict(host=HOST, milter_port=RSPAMD_MILTER_PORT,
                   controller_port=RSPAMD_CONTROLLER_PORT, pidfile=self.pidfile(),
                   log=self.log, run_dir=self.run_dir, dns_port=DNS_PORT, domain=DOMAIN,
                   selector=DKIM_SELECTOR, dkim_key=s.dkim_key)
        files = {self.conf: RSPAMD_CONF,
                 os.path.join(self.override_d, "options.inc"): RSPAMD_OPTIONS,
                 os.path.join(self.local_d, "actions.conf"): RSPAMD_ACTIONS,
                 os.path.join(self.local_d, "spf.conf"): RSPAMD_SPF,
                 os.path.join(self.local_d, "dkim.conf"): RSPAMD_DKIM,
                 os.path.join(self.local_d, "dmarc.conf"): RSPAMD_DMARC,
                 os.path.join(self.local_d, "dkim_signing.conf"): RSPAMD_DKIM_SIGNING,
                 os.path.join(self.local_d, "arc.conf"): RSPAMD_ARC,
                 os.path.join(self.local_d, "milter_headers.conf"): RSPAMD_MILTER_HEADERS}
        for mod in RSPAMD_DISABLED_MODULES:
            files[os.path.join(self.local_d, mod + ".conf")] = RSPAMD_DISABLED
        changed = False
        for path, template in files.items():
            changed |= _write(path, template.format(**fmt))
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self._spawn(self.command(), self.start_log)

    def reload(self):
        # SIGHUP makes rspamd spawn new workers while the old ones drain; a
        # message in that window may meet an old-config worker.  Restart.
        self.stop()
        self.start()
        self.stack.wait_ready(services=[self])


class Auxd(Service):
    """The stack's own small stdlib daemon (DIR/aux/auxd.py, generated from
    AUXD_SCRIPT, run with /usr/bin/python3 as nobody):

    - greylisting policy service for the inbound MX on HOST:GREYLIST_POLICY_PORT
      (Postfix asks it only for +greylist recipients); N is read from
      DIR/aux/greylist-seconds at each new message (set_greylist_seconds());
    - implicit-TLS front on HOST:IMAPS_EXPIRED_PORT presenting the EXPIRED
      certificate and passing the plaintext on to Dovecot IMAP (HOST:IMAP_PORT).
      (Dovecot 2.3 cannot give one listener its own certificate: its config
      filters are protocol, local/remote IP and SNI name, not the port.)"""
    name = "auxd"
    packages = ()

    def __init__(self, stack):
        super().__init__(stack)
        s = stack
        self.conf_dir = os.path.join(s.dir, "aux")
        self.script = os.path.join(self.conf_dir, "auxd.py")
        self.conf = os.path.join(self.conf_dir, "auxd.json")
        self.seconds_file = os.path.join(self.conf_dir, "greylist-seconds")

    def pidfile(self):
        return os.path.join(self.conf_dir, "auxd.pid")

    def matches(self, pid):
        cmd = _proc_cmdline(pid)
        return self.script in cmd and self.conf in cmd

    def endpoints(self):
        return [("tcp", HOST, GREYLIST_POLICY_PORT), ("tcp", HOST, IMAPS_EXPIRED_PORT)]

    def info(self):
        return {"script": self.script, "config": self.conf, "log": self.log,
                "greylist_policy": "inet:%s:%d" % (HOST, GREYLIST_POLICY_PORT),
                "greylist_seconds_file": self.seconds_file,
                "imaps_expired_port": IMAPS_EXPIRED_PORT,
                "imaps_expired_backend": "%s:%d" % (HOST, IMAP_PORT)}

    @staticmethod
    def python():
        return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

    def write_config(self):
        s = self.stack
        _mkdir(self.conf_dir, 0o755)
        if not os.path.exists(self.seconds_file):
            _write(self.seconds_file, "%g\n" % GREYLIST_DEFAULT_SECONDS, 0o644)
        cfg = {"host": HOST, "greylist_port": GREYLIST_POLICY_PORT,
               "greylist_seconds_file": self.seconds_file,
               "greylist_default_seconds": GREYLIST_DEFAULT_SECONDS,
               "greylist_stale_seconds": GREYLIST_STALE_SECONDS,
               "greylist_action": GREYLIST_ACTION,
               "imaps_expired_port": IMAPS_EXPIRED_PORT,
               "imap_backend": [HOST, IMAP_PORT],
               "cert": s.expired_cert, "key": s.expired_key,
               "pidfile": self.pidfile(), "log": self.log, "user": "nobody"}
        changed = _write(self.script, AUXD_SCRIPT, 0o755)
        changed |= _write(self.conf, json.dumps(cfg, indent=1, sort_keys=True) + "\n", 0o644)
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self._spawn([self.python(), self.script, self.conf], self.start_log)

    def reload(self):
        # the greylist table is in memory: a restart forgets it (short)
        self.stop()
        self.start()
        self.stack.wait_ready(services=[self])


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
        # EXPIRED server certificate (stack CA, DNS:localhost), ports *_EXPIRED_PORT
        self.expired_cert = os.path.join(self.tls_dir, "expired.pem")
        self.expired_key = os.path.join(self.tls_dir, "expired.key")
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
        self.dkim_dir = os.path.join(self.dir, "dkim")
        self.dkim_key = os.path.join(self.dkim_dir, "%s.%s.key" % (DOMAIN, DKIM_SELECTOR))
        # a valid RSA key that is NOT the signing key ("wrong key" fault)
        self.dkim_other_key = os.path.join(self.dkim_dir, "other.key")
        # start order; stop is the reverse
        self.dnsmasq = Dnsmasq(self)
        self.rspamd = Rspamd(self)
        self.dovecot = Dovecot(self)
        self.postfix = Postfix(self)
        self.auxd = Auxd(self)
        self.services = [self.dnsmasq, self.rspamd, self.dovecot, self.auxd, self.postfix]

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
        self._ensure_dkim()
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
                busy = [e for e in svc.endpoints() if _endpoint_busy(e)]
                if busy:
                    raise StackError("%s: port(s) %s already in use by something else"
                                     % (svc.name, ", ".join(str(e[2]) for e in busy)))
                svc.start()
                actions.append("%s started" % svc.name)
        self.wait_ready()
        self._ensure_quota_full()
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
        if new_ca or not (os.path.exists(self.expired_cert) and os.path.exists(self.expired_key)):
            self._make_expired_cert(cnf, log)

    def _make_expired_cert(self, cnf, log, days_ago=1, valid_days=30):
        """A server certificate for TLS_HOSTNAME signed by the stack CA whose
        notAfter lies days_ago in the past.  OpenSSL 3.0's "x509 -req" has no
        -not_after (3.4+) and -days cannot go negative: "openssl ca" with
        -startdate/-enddate and a throw-away CA database does it."""
        self._say("generating EXPIRED server certificate for %s" % TLS_HOSTNAME)
        work = os.path.join(self.tls_dir, "expired-ca.tmp")
        _mkdir(work, 0o700)
        try:
            db, serial = os.path.join(work, "index.txt"), os.path.join(work, "serial")
            _write(db, "", 0o600)
            _write(serial, secrets.token_hex(16).upper() + "\n", 0o600)
            ca_cnf = os.path.join(work, "ca.cnf")
            _write(ca_cnf, OPENSSL_EXPIRED_CA_CNF.format(db=db, serial=serial, work=work), 0o600)
            now = time.time()
            fmt = "%Y%m%d%H%M%SZ"
            start = time.strftime(fmt, time.gmtime(now - (days_ago + valid_days) * 86400))
            end = time.strftime(fmt, time.gmtime(now - days_ago * 86400))
            csr, key = os.path.join(work, "expired.csr"), os.path.join(work, "expired.key")
            cert = os.path.join(work, "expired.pem")
            _run(["openssl", "req", "-new", "-config", cnf, "-newkey", "rsa:2048", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=%s" % TLS_HOSTNAME], log=log)
            _run(["openssl", "ca", "-batch", "-config", ca_cnf, "-cert", self.ca,
                  "-keyfile", self.ca_key, "-in", csr, "-out", cert, "-notext",
                  "-startdate", start, "-enddate", end,
                  "-extfile", cnf, "-extensions", "server_ext"], log=log)
            os.chmod(key, 0o600)
            os.chmod(cert, 0o644)
            os.replace(key, self.expired_key)
            os.replace(cert, self.expired_cert)
        finally:
            for name in os.listdir(work):
                os.unlink(os.path.join(work, name))
            os.rmdir(work)

    # ------------------------------------------------------------ DKIM keys
    def _ensure_dkim(self):
        gid = grp.getgrnam(RSPAMD_USER).gr_gid
        _mkdir(self.dkim_dir, 0o750, 0, gid)
        log = os.path.join(self.log_dir, "openssl.log")
        new_signing_key = False
        for key in (self.dkim_key, self.dkim_other_key):
            if not os.path.exists(key):
                self._say("generating %d-bit DKIM key %s" % (DKIM_BITS, key))
                tmp = key + ".tmp"
                _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                      "rsa_keygen_bits:%d" % DKIM_BITS, "-out", tmp], log=log)
                os.chmod(tmp, 0o640)
                os.chown(tmp, 0, gid)
                os.replace(tmp, key)
                new_signing_key |= key == self.dkim_key
            os.chmod(key, 0o640)       # rspamd workers run as _rspamd
            os.chown(key, 0, gid)
        if new_signing_key and os.path.exists(self.dnsmasq.records_file):
            os.unlink(self.dnsmasq.records_file)   # published key must match the new one

    def _public_txt(self, key):
        cache = self.__dict__.setdefault("_pub_cache", {})
        try:
            st = os.stat(key)
        except OSError:
            raise StackError("no DKIM key %s yet: run 'up' first" % key)
        ck = (key, st.st_mtime_ns, st.st_size)
        if ck not in cache:
            pem = _run(["openssl", "pkey", "-in", key, "-pubout"]).stdout
            body = pem.split("-----BEGIN PUBLIC KEY-----", 1)[1].split("-----END", 1)[0]
            cache[ck] = "v=DKIM1; k=rsa; p=" + "".join(body.split())
        return cache[ck]

    def dkim_public_txt(self):
        """The correct TXT value for DKIM_NAME (s2026._domainkey.example.test)."""
        return self._public_txt(self.dkim_key)

    def dkim_other_public_txt(self):
        """A valid DKIM TXT value for a different RSA key: publish it at
        DKIM_NAME for the "wrong key" case (dkim=fail)."""
        return self._public_txt(self.dkim_other_key)

    # ------------------------------------------------------------------ DNS
    KEEP = KEEP                 # set_dns(): leave this record as it is
    DEFAULT = DEFAULT           # set_dns()/set_txt(): back to the default
    DKIM_REVOKED = DKIM_REVOKED  # "v=DKIM1; p=" (revoked key)
    SPF_NAME, DKIM_NAME, DMARC_NAME = SPF_NAME, DKIM_NAME, DMARC_NAME

    def default_dns_records(self):
        """{name: [TXT value, ...]} published after up/reset_dns()."""
        return {SPF_NAME: [DEFAULT_SPF], DKIM_NAME: [self.dkim_public_txt()],
                DMARC_NAME: [DEFAULT_DMARC]}

    def dns_records(self):
        """The TXT records dnsmasq publishes: {name: [value, ...]} (one
        string per record; values over 255 bytes are served split into
        several character-strings, which verifiers join)."""
        try:
            with open(self.dnsmasq.records_file) as fh:
                return {k: list(v) for k, v in json.load(fh)["txt"].items()}
        except (OSError, ValueError, KeyError):
            return self.default_dns_records()

    @staticmethod
    def _dns_values(value, name):
        if value is None:
            return []
        values = [value] if isinstance(value, str) else list(value)
        for v in values:
            if not isinstance(v, str) or any(not (0x20 <= ord(c) <= 0x7E) for c in v):
                raise ValueError("TXT value for %s must be printable ASCII: %r" % (name, v))
        return values

    @staticmethod
    def _dns_name(name):
        n = name.strip().rstrip(".").lower()
        if not n or any(not lab or len(lab) > 63 or
                        any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-_" for c in lab)
                        for lab in n.split(".")):
            raise ValueError("bad DNS name: %r" % name)
        return n

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
            n = self._dns_name(name)
            values = defaults.get(n, []) if value is DEFAULT else self._dns_values(value, n)
            if values:
                records[n] = values
            else:
                records.pop(n, None)
        return self._publish(records)

    def _publish(self, records):
        before = self.dns_records()
        dm = self.dnsmasq
        _mkdir(dm.conf_dir, 0o755)
        _write(dm.records_file, json.dumps({"txt": records}, indent=1, sort_keys=True) + "\n")
        if dm.write_config() and dm.is_running():
            dm.reload()
            for name in set(before) | set(records):
                want = sorted(records.get(name, []))
                rcode, got = dns_query(name, "TXT")
                if sorted(got) != want:
                    raise StackError("dnsmasq serves %s TXT %r (%s), expected %r"
                                     % (name, got, rcode, want))
        if os.path.exists(self.stack_json):
            self.write_stack_json()
        return dict(records)

    def dns_query(self, name, qtype="TXT", tcp=False):
        """(rcode, answers) from the stack's dnsmasq; see dns_query()."""
        return dns_query(name, qtype, (HOST, DNS_PORT), tcp=tcp)

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
        lines = "".join("%s:{PLAIN}%s::::::%s\n" % (self.address(u), self.password(u),
                                                   USER_EXTRA_FIELDS.get(u, ""))
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

    # ------------------------------------------------------- greylisting
    def greylist_seconds(self):
        """N of the greylist knob (GREYLIST_DEFAULT_SECONDS unless set)."""
        try:
            with open(self.auxd.seconds_file) as fh:
                return float(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return float(GREYLIST_DEFAULT_SECONDS)

    def set_greylist_seconds(self, seconds=GREYLIST_DEFAULT_SECONDS):
        """Greylist +greylist recipients at the inbound MX for `seconds`
        (0: let them through at once; DEFAULT or no argument: back to 3).
        auxd reads the value when it first sees a message: messages already
        being greylisted keep the N they started with."""
        if seconds is DEFAULT or seconds is None:
            seconds = GREYLIST_DEFAULT_SECONDS
        seconds = float(seconds)
        if not 0 <= seconds <= 86400:
            raise ValueError("greylist seconds out of range: %r" % seconds)
        _mkdir(self.auxd.conf_dir, 0o755)
        _write(self.auxd.seconds_file, "%g\n" % seconds, 0o644)
        if os.path.exists(self.stack_json):
            self.write_stack_json()
        return seconds

    # ------------------------------------------------------------- quota
    def quota(self, user):
        """{"STORAGE": (value_kib, limit_kib or None), "MESSAGE": (...)} from
        doveadm quota get."""
        out = self.dovecot.doveadm("quota", "get", "-u", self.address(user)).stdout
        res = {}
        for line in out.splitlines():
            parts = line.split()
            for kind in ("STORAGE", "MESSAGE"):
                if kind in parts:
                    i = parts.index(kind)
                    limit = parts[i + 2] if len(parts) > i + 2 else "-"
                    res[kind] = (int(parts[i + 1]), None if limit == "-" else int(limit))
        return res

    def _ensure_quota_full(self):
        """Make sure QUOTA_FULL_USER is over its quota: store a filler message
        straight into its Maildir (APPEND and LMTP would be refused: over
        quota) and let Dovecot recount."""
        user = QUOTA_FULL_USER
        value, limit = self.quota(user).get("STORAGE", (0, None))
        if limit is not None and value > limit:
            return False
        vm = pwd.getpwnam(VMAIL_USER)
        maildir = self.mailbox_path(user)
        for d in (os.path.dirname(os.path.dirname(maildir)), os.path.dirname(maildir),
                  maildir, os.path.join(maildir, "cur"), os.path.join(maildir, "new"),
                  os.path.join(maildir, "tmp")):
            if not os.path.isdir(d):
                _mkdir(d, 0o700, vm.pw_uid, vm.pw_gid)
        body = ("From: MAILER-DAEMON@%s\r\nTo: %s\r\nSubject: mailstack quota filler\r\n"
                "Date: %s\r\nMessage-ID: <quota-filler-%s@%s>\r\n\r\n"
                % (DOMAIN, self.address(user),
                   time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                   secrets.token_hex(8), DOMAIN))
        line = "This message keeps the mailbox over its quota (tests/mailstack.py).\r\n"
        body += line * (QUOTA_FULL_FILLER_BYTES // len(line) + 1)
        name = "%d.M%dP%d.mailstack-filler" % (time.time(), secrets.randbits(20), os.getpid())
        tmp = os.path.join(maildir, "tmp", name)      # Maildir: write in tmp/, move to new/
        _write(tmp, body, 0o600, vm.pw_uid, vm.pw_gid)
        os.rename(tmp, os.path.join(maildir, "new", name))
        self.dovecot.doveadm("quota", "recalc", "-u", self.address(user))
        value, limit = self.quota(user).get("STORAGE", (0, None))
        if limit is None or value <= limit:
            raise StackError("%s is not over quota after the filler: %s KiB of %s KiB"
                             % (self.address(user), value, limit))
        self._say("%s filled over quota (%d KiB of %d KiB)" % (self.address(user), value, limit))
        return True

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

    # -------------------------------------------------------------- IMAP
    @contextlib.contextmanager
    def imap(self, user, timeout=30.0):
        """A logged-in imaplib client for user over IMAPS (HOST:IMAPS_PORT,
        certificate verified against the stack CA as TLS_HOSTNAME); logs out
        on exit.  Folder names passed to imaplib must be quoted by the caller
        (imap_mailbox() does it)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        client = _IMAPS(ctx, timeout)
        try:
            client.login(self.address(user), self.password(user))
        except imaplib.IMAP4.error as e:
            client.shutdown()
            raise StackError("IMAP login as %s failed: %s" % (self.address(user), e))
        try:
            yield client
        finally:
            try:
                client.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    @staticmethod
    def imap_mailbox(name):
        """name as an IMAP quoted string (modified UTF-7), for imaplib calls."""
        return _imap_mailbox(name)

    def append_message(self, user, folder, raw, internaldate=None, flags=None,
                       create=True):
        """Store raw (bytes or str; bare LF line ends are sent as CRLF) in
        user's folder with the given INTERNALDATE: a datetime (naive = local
        time), an epoch number, a time tuple, or None (the server's "now").
        flags: e.g. "\\Seen" or ("\\Seen", "\\Flagged").  A missing folder is
        created (create=False: StackError).  Returns the new UID from the
        server's APPENDUID response code, or None if it gives none."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        date = None
        if internaldate is not None:
            if isinstance(internaldate, datetime.datetime) and internaldate.tzinfo is None:
                internaldate = internaldate.astimezone()    # naive = local time
            date = imaplib.Time2Internaldate(internaldate)
        if flags is not None and not isinstance(flags, str):
            flags = " ".join(flags)
        if flags is not None and not flags.startswith("("):
            flags = "(%s)" % flags
        mailbox = _imap_mailbox(folder)
        with self.imap(user) as m:
            typ, data = m.append(mailbox, flags, date, raw)
            if typ != "OK" and create and b"[TRYCREATE]" in (data[0] or b""):
                m.create(mailbox)
                m.subscribe(mailbox)
                typ, data = m.append(mailbox, flags, date, raw)
            if typ != "OK":
                raise StackError("IMAP APPEND to %s of %s failed: %s"
                                 % (folder, self.address(user), _imap_text(data)))
        match = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0] or b"", re.I)
        return int(match.group(2)) if match else None

    def folder_uids(self, user, folder, search="ALL"):
        """UIDs (ints, ascending) in user's folder matching an IMAP SEARCH
        key (a str such as 'ALL', 'UNSEEN', 'SUBJECT "x"', 'BEFORE 1-Jan-2020',
        or a sequence of search-key atoms).  Read-only (EXAMINE): flags such
        as \\Recent and \\Seen are left alone.  [] if the folder does not
        exist."""
        if not isinstance(search, str):
            search = " ".join(search)
        with self.imap(user) as m:
            typ, data = m.select(_imap_mailbox(folder), readonly=True)
            if typ != "OK":
                if b"NONEXISTENT" in (data[0] or b"") or b"doesn't exist" in (data[0] or b""):
                    return []
                raise StackError("IMAP EXAMINE %s of %s failed: %s"
                                 % (folder, self.address(user), _imap_text(data)))
            typ, data = m.uid("SEARCH", search)
            if typ != "OK":
                raise StackError("IMAP UID SEARCH %s in %s failed: %s"
                                 % (search, folder, _imap_text(data)))
        return sorted(int(x) for x in b" ".join(d for d in data if d).split())

    def delete_all(self, user, folder):
        """Empty user's folder (UID STORE 1:* +FLAGS.SILENT (\\Deleted),
        EXPUNGE).  Returns the number of messages removed (0 if the folder
        does not exist)."""
        with self.imap(user) as m:
            typ, data = m.select(_imap_mailbox(folder))
            if typ != "OK":
                if b"NONEXISTENT" in (data[0] or b"") or b"doesn't exist" in (data[0] or b""):
                    return 0
                raise StackError("IMAP SELECT %s of %s failed: %s"
                                 % (folder, self.address(user), _imap_text(data)))
            if int(data[0] or 0) == 0:
                return 0
            typ, data = m.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
            if typ != "OK":
                raise StackError("IMAP STORE \\Deleted in %s failed: %s"
                                 % (folder, _imap_text(data)))
            typ, data = m.expunge()
            if typ != "OK":
                raise StackError("IMAP EXPUNGE in %s failed: %s" % (folder, _imap_text(data)))
            m.close()
        return len([d for d in data if d])

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
                eps[_endpoint_name(e)] = _endpoint_open(e)
            st[svc.name] = {"running": svc.is_running(), "pid": svc.pid(), "endpoints": eps}
        return st

    def healthy(self):
        return all(s["running"] and all(s["endpoints"].values())
                   for s in self.status().values())

    def wait_ready(self, timeout=None, services=None):
        """Wait for every endpoint; each service has its own budget
        (svc.ready_timeout, e.g. 120 s for rspamd's first start) unless
        timeout is given."""
        t0 = time.monotonic()
        pending = [(svc, e) for svc in (services or self.services) for e in svc.endpoints()]
        while pending:
            pending = [(svc, e) for svc, e in pending if not _endpoint_open(e)]
            if not pending:
                break
            now = time.monotonic()
            for svc, e in pending:
                budget = svc.ready_timeout if timeout is None else timeout
                if now - t0 > budget:
                    raise StackError("%s not ready after %.0fs: %s\n--- %s\n%s" % (
                        svc.name, budget, _endpoint_name(e), svc.log,
                        _tail(svc.log) + _tail(svc.start_log)))
                if now - t0 > 3 and not svc.is_running():
                    raise StackError("%s died while starting\n--- %s\n%s" % (
                        svc.name, svc.log, _tail(svc.log) + _tail(svc.start_log)))
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
                      "mx": MX_PORT, "imap": IMAP_PORT, "imaps": IMAPS_PORT,
                      "submissions_expired": SUBMISSIONS_EXPIRED_PORT,
                      "imaps_expired": IMAPS_EXPIRED_PORT,
                      "greylist_policy": GREYLIST_POLICY_PORT},
            "ca": self.ca,
            "tls": {"ca": self.ca, "cert": self.tls_cert, "key": self.tls_key,
                    "expired_cert": self.expired_cert, "expired_key": self.expired_key,
                    "expired_not_after": self._cert_not_after(self.expired_cert)},
            "users": {u: {"address": self.address(u), "login": self.address(u),
                          "password": self.password(u),
                          "password_file": self.password_file(u),
                          "maildir": self.mailbox_path(u)} for u in USERS},
            "logs": {svc.name: svc.log for svc in self.services},
            "postfix": self.postfix.info(),
            "dovecot": self.dovecot.info(),
            "auxd": self.auxd.info(),
            "faults": {"hold": "+hold", "tempfail": "+tempfail", "reject": "+reject",
                       "tempfail_reply": HOLD_TEMPFAIL_REPLY, "reject_reply": REJECT_REPLY,
                       "forge": "+forge", "forged_header": FORGED_AUTH_RESULTS,
                       "junk": "+" + JUNK_DETAIL, "junk_folder": JUNK_FOLDER,
                       "junk_description": (
                           "mail to <user>+%s@%s (or +%s-*, +%s.*, +%s_*) is filed into %s "
                           "by a global Dovecot sieve_before script"
                           % (JUNK_DETAIL, DOMAIN, JUNK_DETAIL, JUNK_DETAIL, JUNK_DETAIL,
                              JUNK_FOLDER)),
                       "unknown_user": UNKNOWN_USER,
                       "unknown_user_reply": UNKNOWN_USER_REPLY % UNKNOWN_USER,
                       "unknown_user_description": (
                           "any local part @%s not in %s is accepted (250) at submission and "
                           "rejected by the inbound MX (port %d) with 550 5.1.1 User unknown; "
                           "Postfix bounces at once: a DSN (multipart/report, "
                           "message/delivery-status, Status: 5.1.1, the original message) "
                           "from MAILER-DAEMON to the envelope sender lands in its INBOX"
                           % (DOMAIN, "/".join(USERS), MX_PORT)),
                       "quota_full_user": self.address(QUOTA_FULL_USER),
                       "quota_full_limit": QUOTA_FULL_LIMIT,
                       "quota_full_reply": QUOTA_FULL_REPLY % self.address(QUOTA_FULL_USER),
                       "quota_status_action": "action=" + QUOTA_STATUS_OVERQUOTA,
                       "quota_full_description": (
                           "RCPT TO:<%s> (any +detail too) on the submission ports (%d, %d, "
                           "%d) is answered %r by Dovecot's quota-status policy service: the "
                           "mailbox (quota %s) holds a filler message stored at up; other "
                           "users are unaffected" % (
                               self.address(QUOTA_FULL_USER), SUBMISSION_PORT,
                               SUBMISSIONS_PORT, SUBMISSIONS_EXPIRED_PORT,
                               QUOTA_FULL_REPLY % self.address(QUOTA_FULL_USER),
                               QUOTA_FULL_LIMIT)),
                       "greylist": "+" + GREYLIST_DETAIL,
                       "greylist_seconds": self.greylist_seconds(),
                       "greylist_default_seconds": GREYLIST_DEFAULT_SECONDS,
                       "greylist_action": "action=" + GREYLIST_ACTION,
                       "greylist_reply": GREYLIST_REPLY % ("probe+%s@%s" % (GREYLIST_DETAIL,
                                                                            DOMAIN)),
                       "greylist_description": (
                           "mail to <user>+%s@%s (or +%s-*, +%s.*, +%s_*) is deferred by the "
                           "inbound MX (port %d) at RCPT (450 4.7.1) until the message "
                           "(client, sender, recipient, size) was first seen N s ago "
                           "(set_greylist_seconds(n), default %g; read when a message is "
                           "first seen); the relay retries every 1-2 s, so it lands in INBOX "
                           "about N..N+2 s after submission"
                           % (GREYLIST_DETAIL, DOMAIN, GREYLIST_DETAIL, GREYLIST_DETAIL,
                              GREYLIST_DETAIL, MX_PORT, GREYLIST_DEFAULT_SECONDS)),
                       "noauth_user": self.address(NOAUTH_USER),
                       "noauth_reply": NOAUTH_REPLY,
                       "noauth_description": (
                           "%s has a password (password file like the others) but SMTP AUTH "
                           "on the submission ports fails with %r (Dovecot deny passdb for "
                           "auth service %s); IMAP LOGIN with the same password works"
                           % (self.address(NOAUTH_USER), NOAUTH_REPLY,
                              "/".join(NOAUTH_SERVICES))),
                       "sender_reject": "+" + SENDER_REJECT_DETAIL,
                       "sender_reject_reply": SENDER_REJECT_REPLY % (
                           "probe+%s@%s" % (SENDER_REJECT_DETAIL, DOMAIN)),
                       "sender_reject_description": (
                           "MAIL FROM:<<user>+%s@%s> (or +%s-*, .*, _*) on the submission "
                           "ports is answered %r at MAIL FROM (smtpd_delay_reject=no there)"
                           % (SENDER_REJECT_DETAIL, DOMAIN, SENDER_REJECT_DETAIL,
                              SENDER_REJECT_REPLY % ("<user>+%s@%s" % (SENDER_REJECT_DETAIL,
                                                                       DOMAIN)))),
                       "expired_cert": self.expired_cert,
                       "expired_ports": {"submissions_expired": SUBMISSIONS_EXPIRED_PORT,
                                         "imaps_expired": IMAPS_EXPIRED_PORT},
                       "expired_description": (
                           "implicit TLS on %s:%d (Postfix submissions, AUTH) and %s:%d "
                           "(IMAPS, auxd TLS front to Dovecot) presents a certificate for %s "
                           "from the stack CA that has EXPIRED: verification fails with "
                           "'certificate has expired'; everything else is as on %d/%d"
                           % (HOST, SUBMISSIONS_EXPIRED_PORT, HOST, IMAPS_EXPIRED_PORT,
                              TLS_HOSTNAME, SUBMISSIONS_PORT, IMAPS_PORT))},
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
        }

    @staticmethod
    def _cert_not_after(path):
        res = _run(["openssl", "x509", "-in", path, "-noout", "-enddate"], check=False)
        return res.stdout.strip().split("=", 1)[-1] if res.returncode == 0 else None

    def write_stack_json(self):
        info = self.info()
        _write(self.stack_json, json.dumps(info, indent=2, sort_keys=True) + "\n", 0o600)
        return info

    def env(self):
        i = self.info()
        out = {"MAILSTACK_DIR": self.dir, "MAILSTACK_JSON": self.stack_json,
               "MAILSTACK_HOST": HOST, "MAILSTACK_TLS_HOSTNAME": TLS_HOSTNAME,
               "MAILSTACK_CA": self.ca, "MAILSTACK_DOMAIN": DOMAIN,
               "MAILSTACK_POSTFIX_CONFIG_DIR": self.postfix.conf_dir,
               "MAILSTACK_NAMESERVER": "%s:%d" % (HOST, DNS_PORT),
               "MAILSTACK_DNS_HOST": HOST, "MAILSTACK_DNS_PORT": str(DNS_PORT),
               "MAILSTACK_AUTHSERV_ID": AUTHSERV_ID,
               "MAILSTACK_DKIM_SELECTOR": DKIM_SELECTOR,
               "MAILSTACK_RSPAMD_MILTER_PORT": str(RSPAMD_MILTER_PORT)}
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

# "openssl ca" for the expired certificate (a throw-away database)
OPENSSL_EXPIRED_CA_CNF = """\
[ ca ]
default_ca = expired_ca
[ expired_ca ]
database = {db}
serial = {serial}
new_certs_dir = {work}
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
commonName = supplied
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

# noauth knob: users listed as "<service>/<user>" are refused for that auth
# service whatever the password (Postfix SASL asks as service "smtp").
passdb {{
  driver = passwd-file
  args = username_format=%{{service}}/%Lu {deny_file}
  deny = yes
}}
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
  # global, runs before the user's own script: +junk -> Junk
  sieve_before = {sieve_before}
  # quota-status (Postfix policy service on the submission ports): only an
  # over-quota recipient is refused; unknown users are the MX's business
  quota_status_success = DUNNO
  quota_status_nouser = DUNNO
  quota_status_overquota = "{quota_reply}"
}}

protocol imap {{
  mail_plugins = $mail_plugins imap_quota
  # Dovecot's default is 10 per user and client address; every probe holds
  # one IMAP session per watched folder, and the tests run twenty at once.
  mail_max_userip_connections = 100
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@{domain}
}}

# No authentication penalty: after a failed login Dovecot delays the next
# logins from the same address (2, 4, 8, 15 s), correct ones included, and
# the tests log in wrongly on purpose.  The 2 s delay of a failed reply itself
# stays (it is not the penalty).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
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
service quota-status {{
  executable = quota-status -p postfix
  unix_listener quota-status-postfix {{
    mode = 0600
    user = postfix
    group = postfix
  }}
  client_limit = 1
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

# {{ }} are literal braces for str.format
SIEVE_BEFORE = """\
# generated by tests/mailstack.py -- do not edit (compiled at up by sievec)
# Fault knob: mail to <user>+{detail}@ (also +{detail}-*, +{detail}.*,
# +{detail}_*; case-insensitive) is filed into {folder}.  Other mail goes on
# to the user's own script (~/.dovecot.sieve), if any.  Once this script has
# filed a message (implicit keep cancelled) Pigeonhole 0.5 runs no further
# script for it (seen with sieve-test -s): +{detail} always means {folder}.
require ["fileinto", "envelope", "subaddress"];

if anyof (envelope :detail "to" "{detail}",
          envelope :detail :matches "to" ["{detail}-*", "{detail}.*", "{detail}_*"]) {{
    fileinto "{folder}";
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

# rspamd milter, set per service in master.cf (submission ports: DKIM
# signing; MX port: SPF/DKIM/DMARC verification + Authentication-Results).
# tempfail, not accept: with rspamd down, mail must not slip through
# unsigned/unverified (a verdict test would then see "no header" instead of
# the real fault); the client gets 451 4.7.1 and the relay retries.
milter_protocol = 6
milter_default_action = tempfail
milter_connect_macros = j {{daemon_name}} {{daemon_addr}} v _ {{client_addr}} {{client_name}}
milter_mail_macros = i {{auth_type}} {{auth_authen}} {{auth_author}} {{mail_addr}}
    {{mail_host}} {{mail_mailer}} {{client_addr}} {{client_name}}
milter_rcpt_macros = i {{rcpt_addr}} {{rcpt_host}} {{rcpt_mailer}}
milter_end_of_data_macros = i {{auth_authen}}
non_smtpd_milters =

# default (inbound) policy; submission services override
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
# greylist knob (inbound MX only): greylist_access.regexp maps +greylist
# recipients to this class; the policy service is auxd (tests/mailstack.py).
# If auxd is down, only those recipients get 451 4.3.5 (and are retried).
smtpd_restriction_classes = mailstack_greylist
mailstack_greylist = check_policy_service inet:{host}:{greylist_port}
# Unknown users are rejected at the inbound MX only (the submission ports set
# smtpd_reject_unlisted_recipient=no): 550 5.1.1 there is a hard failure, so
# the relaying smtp client bounces at once and a DSN goes to the sender.
smtpd_reject_unlisted_recipient = yes
unknown_virtual_mailbox_reject_code = 550
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
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=check_sender_access,regexp:{sender_access}
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{recipient_access},check_policy_service,unix:{quota_socket},permit_sasl_authenticated,reject
  -o smtpd_reject_unlisted_recipient=no
  -o content_filter=smtp:[{host}]:{mx_port}
  -o smtpd_milters={milter}
{host}:{subs_port} inet n     -       n       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=check_sender_access,regexp:{sender_access}
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{recipient_access},check_policy_service,unix:{quota_socket},permit_sasl_authenticated,reject
  -o smtpd_reject_unlisted_recipient=no
  -o content_filter=smtp:[{host}]:{mx_port}
  -o smtpd_milters={milter}
{host}:{subs_expired_port} inet n  -       n       -       -       smtpd
  -o syslog_name=postfix/submissions-expired
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_chain_files={expired_key},{expired_cert}
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=check_sender_access,regexp:{sender_access}
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{recipient_access},check_policy_service,unix:{quota_socket},permit_sasl_authenticated,reject
  -o smtpd_reject_unlisted_recipient=no
  -o content_filter=smtp:[{host}]:{mx_port}
  -o smtpd_milters={milter}
{host}:{mx_port} inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/mx
  -o myhostname={mx_hostname}
  -o smtpd_sasl_auth_enable=no
  -o smtpd_relay_restrictions=reject_unauth_destination
  -o smtpd_recipient_restrictions=check_recipient_access,regexp:{greylist_access}
  -o smtpd_milters={milter}
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

DNSMASQ_CONF = """\
# generated by tests/mailstack.py -- do not edit (see MailStack.set_dns/set_txt)
# Authoritative answers for {domain} only; everything else NXDOMAIN; nothing
# is forwarded.  dnsmasq must be RESTARTED to change txt-record lines
# (SIGHUP does not re-read them).
port={port}
listen-address={host}
bind-interfaces
no-resolv
no-hosts
no-poll
no-negcache
local-ttl=0
local=/#/
pid-file={pidfile}
log-facility={log}
log-queries
{hosts}mx-host={domain},{mx},10
{txt}"""

# {{ }} are literal braces for str.format
RSPAMD_CONF = """\
# generated by tests/mailstack.py -- do not edit
# The packaged rules and modules (common.conf) with our local.d/override.d:
# rspamd is started with --var LOCAL_CONFDIR/DBDIR/RUNDIR/LOGDIR pointing
# into the stack directory.  Only our own workers, on loopback.
.include "$CONFDIR/common.conf"

options {{
    pidfile = "{pidfile}";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}

logging {{
    type = "file";
    filename = "{log}";
    .include "$CONFDIR/logging.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/logging.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/logging.inc"
}}

# Milter for Postfix.  self_scan (scan in this process, no "normal" worker)
# is a property of the DEFAULT UPSTREAM: at worker level it is ignored and
# every message fails with "cannot find upstream for default" (-> 451).
worker "rspamd_proxy" {{
    bind_socket = "{host}:{milter_port}";
    milter = yes;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
    timeout = 120s;
    count = 1;
    max_retries = 5;
    discard_on_reject = false;
    quarantine_on_reject = false;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}

# HTTP controller (rspamc -h {host}:{controller_port} stat); loopback only.
worker "controller" {{
    bind_socket = "{host}:{controller_port}";
    count = 1;
    secure_ip = "{host}";
    static_dir = "${{WWWDIR}}";
}}
"""

RSPAMD_OPTIONS = """\
# generated by tests/mailstack.py -- priority 10: replaces the packaged values
# Loopback is "local" to rspamd whatever local_addrs says: the spf, dkim and
# dmarc modules get check_local = true instead (local.d/<module>.conf).
local_addrs = [];
# packaged list minus fuzzy_check (wants rspamd.com)
filters = "chartable,dkim,regexp";
dns {{
    nameserver = ["{host}:{dns_port}"];
    timeout = 1s;
    sockets = 4;
    retransmits = 3;
}}
control_socket = "{run_dir}/rspamd.sock mode=0600";
"""

RSPAMD_ACTIONS = """\
# generated by tests/mailstack.py
# Verdict tests need every probe delivered whatever its score: no reject,
# no soft reject (greylist), no X-Spam header, no subject rewrite.
reject = null;
add_header = null;
greylist = null;
rewrite_subject = null;
"""

RSPAMD_SPF = """\
# generated by tests/mailstack.py
check_local = true;     # the MX sees the relay from 127.0.0.1 (always "local")
check_authed = false;   # nothing to check on the authenticated submission pass
spf_cache_size = 0;     # no cache: a DNS change applies to the next message
min_cache_ttl = 0s;
# RFC 7208 4.6.4: at most 10 DNS-querying terms.  rspamd compares BEFORE
# counting the new one, so 9 lets exactly 10 through (its default, 30, lets
# ~31); the 11th include is not looked up and the result is spf=fail, not
# permerror (rspamd logs "spf dns requests limit: 10 > 9 is reached").
max_dns_requests = 9;
max_dns_nesting = 10;
"""

RSPAMD_DKIM = """\
# generated by tests/mailstack.py
check_local = true;
check_authed = false;
dkim_cache_size = 0;    # no key cache: a DNS change applies to the next message
"""

RSPAMD_DMARC = """\
# generated by tests/mailstack.py
# Verdicts only: no "actions" section, so p=quarantine/reject is never enforced.
check_local = true;
check_authed = false;
reporting {{
    enabled = false;
}}
"""

RSPAMD_DKIM_SIGNING = """\
# generated by tests/mailstack.py
# Sign authenticated submissions from {domain} only, never the inbound pass
# (which comes from 127.0.0.1: "local" to rspamd, hence sign_local = false).
enabled = true;
sign_authenticated = true;
sign_local = false;
sign_inbound = false;
use_domain = "header";
use_esld = false;
use_redis = false;
try_fallback = false;
selector = "{selector}";
domain {{
    {domain} {{
        selectors [
            {{
                path = "{dkim_key}";
                selector = "{selector}";
            }}
        ]
    }}
}}
"""

RSPAMD_ARC = """\
# generated by tests/mailstack.py -- nothing is ARC-signed (no ARC keys here)
sign_authenticated = false;
sign_local = false;
sign_inbound = false;
"""

RSPAMD_MILTER_HEADERS = """\
# generated by tests/mailstack.py
# One Authentication-Results header, from the inbound MX pass only
# (skip_authenticated: the submission pass adds none).
use = ["authentication-results"];
skip_local = false;
skip_authenticated = true;
remove_upstream_spam_flag = false;
routines {{
    authentication-results {{
        header = "Authentication-Results";
        # Keep foreign Authentication-Results headers (the packaged default,
        # remove = 0, deletes ALL of them): tests forge one in a submitted
        # message and check the plugin ignores it below the receiver's own.
        remove = false;
        add_smtp_user = false;
    }}
}}
"""

RSPAMD_DISABLED = """\
# generated by tests/mailstack.py -- wants the internet or Redis
enabled = false;
"""

# regexp tables are case-insensitive by default
RECIPIENT_ACCESS_MAP = """\
# generated by tests/mailstack.py -- fault knobs by recipient local part
/^[^@]*\\+hold([-._][^@]*)?@/         HOLD held by mailstack fault knob
/^[^@]*\\+tempfail([-._][^@]*)?@/     {tempfail}
/^[^@]*\\+reject([-._][^@]*)?@/       {reject}
/^[^@]*\\+forge([-._][^@]*)?@/        PREPEND {forged}
"""

# submission ports, smtpd_sender_restrictions (smtpd_delay_reject=no there:
# the reply comes at MAIL FROM, not at the first RCPT TO)
SENDER_ACCESS_MAP = """\
# generated by tests/mailstack.py -- fault knob by sender local part
/^[^@]*\\+{detail}([-._][^@]*)?@/      {reply}
"""

# inbound MX, smtpd_recipient_restrictions: the value is a restriction class
# (main.cf smtpd_restriction_classes) that asks auxd's greylisting policy
GREYLIST_ACCESS_MAP = """\
# generated by tests/mailstack.py -- fault knob by recipient local part
/^[^@]*\\+{detail}([-._][^@]*)?@/      mailstack_greylist
"""


# The auxd daemon (written to DIR/aux/auxd.py, run as "python3 auxd.py
# DIR/aux/auxd.json"; stdlib only, no str.format on this text).
AUXD_SCRIPT = r"""#!/usr/bin/python3
# generated by tests/mailstack.py -- do not edit
# auxd: the mail stack's small helpers, one process (threads):
#  * Postfix policy service (greylisting) on host:greylist_port.  Postfix asks
#    only for +greylist recipients.  A message is (client_address, sender,
#    recipient, size): "defer_if_permit ..." until it was first seen N s ago,
#    then "dunno" and the entry is forgotten (the next message waits again).
#    N is read from greylist_seconds_file when a message is first seen.
#  * implicit-TLS front on host:imaps_expired_port presenting cert/key (the
#    EXPIRED certificate), plaintext passed on to imap_backend (Dovecot IMAP).
import json
import os
import pwd
import select
import signal
import socket
import ssl
import sys
import threading
import time

LOCK = threading.Lock()


def log(msg):
    t = time.time()
    line = "%s.%06d auxd: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)),
                                    int((t % 1) * 1e6), msg)
    with LOCK:
        sys.stderr.write(line)
        sys.stderr.flush()


def listen(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    return s


def serve(sock, handler):
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            continue
        t = threading.Thread(target=handler, args=(conn, peer), daemon=True)
        t.start()


class Greylist:
    def __init__(self, cfg):
        self.cfg = cfg
        self.seen = {}
        self.lock = threading.Lock()

    def seconds(self):
        try:
            with open(self.cfg["greylist_seconds_file"]) as fh:
                return float(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return float(self.cfg["greylist_default_seconds"])

    def decide(self, a):
        key = (a.get("client_address", ""), a.get("sender", "").lower(),
               a.get("recipient", "").lower(), a.get("size", ""))
        now = time.time()
        stale = float(self.cfg["greylist_stale_seconds"])
        defer = self.cfg["greylist_action"]
        with self.lock:
            for k, (first, n) in list(self.seen.items()):
                if now - first > n + stale:
                    del self.seen[k]
            entry = self.seen.get(key)
            if entry is None:
                n = self.seconds()
                if n <= 0:
                    return "dunno", key, "greylisting off (N=0)"
                self.seen[key] = (now, n)
                return defer, key, "first seen, N=%gs" % n
            first, n = entry
            age = now - first
            if age >= n:
                del self.seen[key]
                return "dunno", key, "passed after %.3fs (N=%gs)" % (age, n)
            return defer, key, "age %.3fs < N=%gs" % (age, n)

    def handle(self, conn, peer):
        try:
            f = conn.makefile("rwb")
            while True:
                attrs = {}
                while True:
                    line = f.readline()
                    if not line:
                        return
                    line = line.rstrip(b"\r\n").decode("utf-8", "replace")
                    if not line:
                        break
                    k, _, v = line.partition("=")
                    attrs[k] = v
                if attrs.get("request") != "smtpd_access_policy":
                    action, why = "dunno", "not a policy request"
                    key = None
                else:
                    action, key, why = self.decide(attrs)
                log("greylist %s -> action=%s (%s) queue_id=%s" % (
                    key, action, why, attrs.get("queue_id", "")))
                f.write(("action=%s\n\n" % action).encode())
                f.flush()
        except OSError as e:
            log("greylist connection error: %s" % e)
        finally:
            conn.close()


class TLSFront:
    def __init__(self, cfg):
        self.cfg = cfg
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cfg["cert"], cfg["key"])

    def handle(self, conn, peer):
        up = None
        try:
            conn.settimeout(15)
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                # a bare TCP probe (status) closes at once: not worth a line
                if not isinstance(e, (ssl.SSLEOFError, ConnectionResetError, socket.timeout)) \
                        and "EOF" not in str(e):
                    log("imaps-expired %s:%d handshake failed: %s" % (peer[0], peer[1], e))
                conn.close()
                return
            host, port = self.cfg["imap_backend"]
            up = socket.create_connection((host, port), timeout=15)
            tls.settimeout(None)
            up.settimeout(None)
            log("imaps-expired %s:%d connected (a client that accepted the expired "
                "certificate), -> %s:%d" % (peer[0], peer[1], host, port))
            while True:
                if tls.pending():
                    ready = [tls]
                else:
                    ready, _, _ = select.select([tls, up], [], [], 600)
                if not ready:
                    break
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except (ssl.SSLError, OSError):
            pass
        finally:
            for s in (up, conn):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass


def main():
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    host = cfg["host"]
    gl_sock = listen(host, cfg["greylist_port"])
    tls_sock = listen(host, cfg["imaps_expired_port"])
    greylist, front = Greylist(cfg), TLSFront(cfg)    # loads the key while root
    logf = open(cfg["log"], "a")
    rfd, wfd = os.pipe()
    if os.fork():                       # parent: wait for the daemon to be ready
        os.close(wfd)
        ok = os.read(rfd, 16) == b"ok"
        os._exit(0 if ok else 1)
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)
    with open(cfg["pidfile"] + ".tmp", "w") as fh:
        fh.write("%d\n" % os.getpid())
    os.rename(cfg["pidfile"] + ".tmp", cfg["pidfile"])
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(logf.fileno(), 1)
    os.dup2(logf.fileno(), 2)
    os.chdir("/")
    pw = pwd.getpwnam(cfg["user"])
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    for sock, handler in ((gl_sock, greylist.handle), (tls_sock, front.handle)):
        threading.Thread(target=serve, args=(sock, handler), daemon=True).start()
    log("started pid %d: greylist policy %s:%d, imaps-expired %s:%d -> %s:%d" % (
        os.getpid(), host, cfg["greylist_port"], host, cfg["imaps_expired_port"],
        cfg["imap_backend"][0], cfg["imap_backend"][1]))
    os.write(wfd, b"ok")
    os.close(wfd)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
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
        "  dns         %s:%d (dnsmasq)     rspamd milter %s:%d  authserv-id %s"
        % (HOST, DNS_PORT, HOST, RSPAMD_MILTER_PORT, AUTHSERV_ID),
        "  DKIM: d=%s s=%s key %s" % (DOMAIN, DKIM_SELECTOR, stack.dkim_key),
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
