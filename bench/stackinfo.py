"""The loopback mail stack as the bench sees it: stack.json, Dovecot's log,
IMAP helpers, the Maildir preload for row 3.

Every path and port comes from the stack's stack.json, found in $MAILSTACK_DIR
(tests/mailstack's own rule; its default directory is repeated here).
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from datetime import datetime

DEFAULT_DIR = "/var/tmp/check_email_roundtrip-stack"  # tests/mailstack/config.py DEFAULT_DIR


def stack_json_path() -> str:
    return os.path.join(os.path.abspath(os.environ.get("MAILSTACK_DIR") or DEFAULT_DIR), "stack.json")


def load_stack() -> dict:
    path = stack_json_path()
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise SystemExit(f"bench: no {path}: bring the stack up first (python3 tests/mailstack up), "
                         "with the same MAILSTACK_DIR and MAILSTACK_PORT_BASE") from None


def client_context(st: dict) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=st["ca"])


# ---------------------------------------------------------------- Dovecot's log
STORED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) .*msgid=<[^>]*?(emailrtprobe[0-9a-f]+)[^>]*>: "
                    r"(?:stored mail into mailbox|saved mail to)")
LOGIN = re.compile(r"imap-login: (?:Info: )?Login: user=<[^>]*>.*session=<([^>]+)>")


class DovecotLog:
    def __init__(self, path: str):
        self.path = path

    def offset(self) -> int:
        return os.path.getsize(self.path)

    def since(self, offset: int) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def logins_since(self, offset: int, settle: float = 2.0) -> int:
        """`imap-login: Login: user=<...>` lines written since offset.

        Waits (at most settle seconds) until every session those lines opened
        has logged its disconnect, so that no line of this run is still on
        its way through Dovecot's log process when the next run starts."""
        end = time.monotonic() + settle
        while True:
            text = self.since(offset)
            sessions = LOGIN.findall(text)
            closed = [s for s in sessions
                      if re.search(rf"<{re.escape(s)}>: (?:Info: )?Disconnected", text)]
            # none at all: give a late line a moment (settle / 4), then believe it
            patience = end if sessions else end - 0.75 * settle
            if (sessions and len(closed) == len(sessions)) or time.monotonic() > patience:
                return len(sessions)
            time.sleep(0.01)

    def stored_times(self, markers) -> dict[str, float]:
        """marker -> epoch of Dovecot's `stored mail into mailbox` / `saved mail to` line."""
        res: dict[str, float] = {}
        want = set(markers)
        with open(self.path, "rb") as fh:
            for raw in fh:
                if b"emailrtprobe" not in raw:
                    continue
                m = STORED.match(raw.decode(errors="replace"))
                if m and m.group(2) in want and m.group(2) not in res:
                    # Dovecot logs local time: a naive datetime is local time too
                    res[m.group(2)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        return res


# ---------------------------------------------------------------- IMAP helpers
class Imap:
    def __init__(self, st: dict, user: str, timeout: float = 600):
        self.m = imaplib.IMAP4_SSL(st["tls_hostname"], st["ports"]["imaps"], ssl_context=client_context(st),
                                   timeout=timeout)
        self.m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        u = st["users"][user]
        self.m.login(u["login"], u["password"])

    def close(self) -> None:
        try:
            self.m.logout()
        except (OSError, imaplib.IMAP4.error):
            pass

    def delete_search(self, folder: str, *criteria: str) -> int:
        self.m.select(folder)
        typ, data = self.m.uid("SEARCH", *criteria)
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        for i in range(0, len(uids), 500):
            self.m.uid("STORE", b",".join(uids[i:i + 500]).decode(), "+FLAGS.SILENT", r"(\Deleted)")
        if uids:
            self.m.expunge()
        self.m.close()
        return len(uids)


def delete_messages(st: dict, user: str, message_ids) -> None:
    """Delete the bench's messages (by a unique part of their Message-ID) from user's INBOX."""
    c = Imap(st, user)
    try:
        for mid in message_ids:
            c.delete_search("INBOX", "HEADER", "Message-ID", mid)
    finally:
        c.close()


def floor_once(st: dict, user: str, folder: str = "INBOX") -> tuple[float, int]:
    """Connect + TLS + LOGIN + SELECT + UID SEARCH UID <uidnext>:*, timed (s); and EXISTS."""
    ctx = client_context(st)
    u = st["users"][user]
    t0 = time.perf_counter()
    m = imaplib.IMAP4_SSL(st["tls_hostname"], st["ports"]["imaps"], ssl_context=ctx, timeout=600)
    m.login(u["login"], u["password"])
    _, data = m.select(folder)
    exists = int(data[0])
    uidnext = None
    for line in m.untagged_responses.get("OK", []):
        mm = re.search(rb"UIDNEXT (\d+)", line)
        if mm:
            uidnext = int(mm.group(1))
    m.uid("SEARCH", "UID", f"{uidnext or 1}:*")
    t = time.perf_counter() - t0
    m.logout()
    return t, exists


def deliver_and_wait(st: dict, to_user: str, timeout: float = 15.0) -> str | None:
    """Submit one plain message (probe -> to_user); wait until Dovecot logs it stored.
    Returns its Message-ID tag, or None when it was not stored within timeout."""
    tag = f"benchfloor{uuid.uuid4().hex}"
    dlog = DovecotLog(st["logs"]["dovecot"])
    off = dlog.offset()
    u = st["users"]["probe"]
    to = st["users"][to_user]["address"]
    with smtplib.SMTP(st["tls_hostname"], st["ports"]["submission"], timeout=30) as s:
        s.starttls(context=client_context(st))
        s.login(u["login"], u["password"])
        s.sendmail(u["address"], [to], (f"From: {u['address']}\r\nTo: {to}\r\nSubject: {tag}\r\n"
                                        f"Message-ID: <{tag}@example.test>\r\n\r\nfloor\r\n"))
    end = time.time() + timeout
    while time.time() < end:
        for line in dlog.since(off).splitlines():
            if tag in line and ("stored mail" in line or "saved mail" in line):
                return tag
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------- row 3: a big folder
def preload(st: dict, user: str, upto: int) -> float:
    """Write filler messages straight into user's Maildir cur/ until it holds upto; seconds taken."""
    md = st["users"][user]["maildir"]
    cur = os.path.join(md, "cur")
    owner = os.stat(md)
    for sub in ("cur", "new", "tmp"):
        p = os.path.join(md, sub)
        if not os.path.isdir(p):
            os.mkdir(p, 0o700)
            os.chown(p, owner.st_uid, owner.st_gid)
    have = len([f for f in os.listdir(cur) if ".benchpreload" in f])
    now = int(time.time())
    pid = os.getpid()
    address = st["users"][user]["address"]
    t0 = time.perf_counter()
    for i in range(have, upto):
        body = (f"From: filler{i}@example.test\r\nTo: {address}\r\nSubject: bench filler {i}\r\n"
                f"Date: Sat, 28 Nov 2026 00:00:00 +0000\r\n"
                f"Message-ID: <bench{i}.{uuid.uuid4().hex}@example.test>\r\n\r\n"
                f"filler message {i} for the retrieval benchmark\r\n").encode()
        name = f"{now - 86400}.M{i}P{pid}.benchpreload,S={len(body)},W={len(body)}:2,S"
        fd = os.open(os.path.join(cur, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body)
        os.fchown(fd, owner.st_uid, owner.st_gid)
        os.close(fd)
    return time.perf_counter() - t0


def unload(st: dict, user: str) -> int:
    """Remove the preloaded files and let Dovecot resync the folder; how many were removed."""
    md = st["users"][user]["maildir"]
    n = 0
    for sub in ("cur", "new"):
        d = os.path.join(md, sub)
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            if ".benchpreload" in f:
                os.unlink(os.path.join(d, f))
                n += 1
    subprocess.run(["doveadm", "-c", st["dovecot"]["config"], "force-resync", "-u",
                    st["users"][user]["login"], "INBOX"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return n
