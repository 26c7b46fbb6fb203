"""Hostile servers for what no real server here can be made to do.

Loopback only.  A :class:`FakeServer` accepts connections and runs one
handler per connection in a thread of its own; the handler gets a
:class:`Peer` that can send, read, stall (say nothing until the test ends),
drip (one line every so often, for ever) and flood (as fast as the client
reads).  On top of it:

- :class:`SmtpFake`: a working SMTP server (no TLS, AUTH PLAIN/LOGIN taken
  as given) that files each message into a :class:`Mailbox`; every step can
  be replaced: ``SmtpFake(mailbox, data=stall)``;
- :class:`ImapFake`: a working IMAP server over the same Mailbox (LOGIN,
  AUTHENTICATE PLAIN, CAPABILITY, SELECT/EXAMINE, STATUS, LIST, UID SEARCH,
  UID FETCH, UID STORE, UID EXPUNGE, LOGOUT), each command replaceable, and
  FETCH responses in the usual order or with UID after the literal
  (Exchange).

So the SMTP fake and the IMAP fake together are a tiny mail system: the
plugin can make a whole round trip against them, and each test spoils one
step.  Also here: :func:`run_measured`, the installed plugin run with its
peak RSS taken from the kernel (``os.wait4``).
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Union

from conftest import PASSWORD_ENV, PLUGIN, PluginRun

# -- the server and one connection -------------------------------------------------------------


class Peer:
    """The server's side of one connection."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self.sock, self.stop = sock, stop
        self.rfile = sock.makefile("rb")
        self.received: list[bytes] = []

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def readline(self) -> bytes:
        try:
            line = self.rfile.readline(1024 * 1024)
        except OSError:
            return b""
        if line:
            self.received.append(line)
        return line

    def read(self, size: int) -> bytes:
        try:
            return self.rfile.read(size)
        except OSError:
            return b""

    def stall(self) -> None:
        """Say nothing more, keep the connection open, until the test ends."""
        self.stop.wait()

    def drip(self, data: bytes, every: float = 0.05) -> None:
        """``data`` every ``every`` seconds, until the client goes away."""
        while not self.stop.is_set() and self.send(data):
            self.stop.wait(every)

    def flood(self, data: bytes) -> None:
        """``data`` again and again, as fast as the client reads it."""
        block = data * max(1, 65536 // len(data))
        while not self.stop.is_set() and self.send(block):
            pass


class FakeServer:
    """A loopback listener; ``handler(peer)`` runs for each connection."""

    def __init__(self, handler: Callable[[Peer], None]):
        self.handler = handler
        self.stop = threading.Event()
        self.peers: list[Peer] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            peer = Peer(sock, self.stop)
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: Peer) -> None:
        try:
            self.handler(peer)
        except OSError:
            pass
        finally:
            if not self.stop.is_set():
                _close(peer.sock)

    @property
    def received(self) -> list[bytes]:
        """Every line the clients sent, in order, all connections."""
        return [line for peer in self.peers for line in peer.received]

    def close(self) -> None:
        self.stop.set()
        _close(self.listener)
        for peer in self.peers:
            _close(peer.sock)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- the mail both fakes share ------------------------------------------------------------------


class Message:
    def __init__(self, uid: int, raw: bytes, internaldate: datetime.datetime):
        self.uid, self.raw, self.internaldate = uid, raw, internaldate
        self.deleted = False

    @property
    def header(self) -> bytes:
        end = self.raw.find(b"\r\n\r\n")
        return self.raw if end < 0 else self.raw[: end + 4]

    @property
    def subject(self) -> bytes:
        match = re.search(rb"^Subject:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", self.raw, re.I | re.M)
        return match.group(0) + b"\r\n\r\n" if match else b"\r\n"


class Mailbox:
    """Folders by their name on the wire (modified UTF-7), each a list of messages."""

    def __init__(self, *folders: str):
        self.folders: dict[str, list[Message]] = {name: [] for name in ("INBOX", *folders)}
        self.uid_next: dict[str, int] = {name: 1 for name in self.folders}
        self.expunged: list[int] = []
        self.lock = threading.Lock()

    def deliver(
        self, raw: bytes, folder: str = "INBOX", internaldate: datetime.datetime | None = None
    ) -> int:
        with self.lock:
            uid = self.uid_next[folder]
            self.uid_next[folder] += 1
            when = internaldate or datetime.datetime.now(datetime.timezone.utc)
            self.folders[folder].append(Message(uid, raw, when))
            return uid


def marker_of(raw: bytes) -> str:
    match = re.search(rb"emailrtprobe[0-9a-f]{24}", raw)
    return match.group(0).decode() if match else ""


def probe_message(marker: str, subject: str | None = None) -> bytes:
    """A message the plugin takes for its probe (marker in the Subject)."""
    return (
        f"From: probe@example.test\r\nTo: probe@example.test\r\n"
        f"Subject: {subject or 'check_email_roundtrip probe ' + marker}\r\n"
        f"X-Check-Email-Roundtrip: {marker}\r\n\r\nbody {marker}\r\n"
    ).encode()


# -- SMTP ------------------------------------------------------------------------------------------

Step = Union[bytes, Callable[..., None], None]
AUTH_RESULTS = (
    b"Authentication-Results: fake.example.test; spf=pass smtp.mailfrom=probe@example.test;\r\n"
    b"\tdkim=pass header.d=example.test; dmarc=pass header.from=example.test\r\n"
)
EHLO = b"250-fake.example.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n"


class SmtpFake(FakeServer):
    """A working SMTP server.  Each keyword replaces one step: bytes are sent
    as the reply; a callable is called with the Peer (and, for ``message``,
    the message) and then the connection is over unless it returns True.

    Steps: greeting, ehlo, starttls, auth, mail, rcpt, data (the 354),
    message (the reply to the message), quit.  ``deliver(raw)`` files a
    message into the mailbox's ``folder`` (INBOX)."""

    def __init__(self, mailbox: Mailbox | None = None, folder: str = "INBOX", **steps: Step):
        self.mailbox, self.folder = mailbox, folder
        self.steps: dict[str, Step] = {
            "greeting": b"220 fake.example.test ESMTP\r\n",
            "ehlo": EHLO,
            "starttls": b"454 4.7.0 TLS not available\r\n",
            "auth": b"235 2.7.0 Authentication successful\r\n",
            "mail": b"250 2.1.0 Ok\r\n",
            "rcpt": b"250 2.1.5 Ok\r\n",
            "data": b"354 End data with <CR><LF>.<CR><LF>\r\n",
            "message": b"250 2.0.0 Ok: queued as FAKE1234\r\n",
            "quit": b"221 2.0.0 Bye\r\n",
        }
        unknown = set(steps) - set(self.steps)
        assert not unknown, f"no such SMTP step: {unknown}"
        self.steps.update(steps)
        self.messages: list[bytes] = []
        super().__init__(self._session)

    def deliver(self, raw: bytes) -> None:
        """Into the mailbox's ``folder``, with the receiver's all-pass verdicts on top."""
        if self.mailbox is not None:
            self.mailbox.deliver(AUTH_RESULTS + raw, self.folder)

    def _step(self, peer: Peer, name: str, *args: object) -> bool:
        """Play one step; False: the connection is over."""
        step = self.steps[name]
        if step is None:
            return False
        if callable(step):
            return bool(step(peer, *args))
        return peer.send(step)

    def _session(self, peer: Peer) -> None:
        if not self._step(peer, "greeting"):
            return
        while True:
            line = peer.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                ok = self._step(peer, "ehlo")
            elif verb == b"STAR":
                ok = self._step(peer, "starttls")
            elif verb == b"AUTH":
                ok = self._auth(peer, line)
            elif verb == b"MAIL":
                ok = self._step(peer, "mail")
            elif verb == b"RCPT":
                ok = self._step(peer, "rcpt")
            elif verb == b"DATA":
                ok = self._step(peer, "data") and self._message(peer)
            elif verb == b"QUIT":
                self._step(peer, "quit")
                return
            else:
                ok = peer.send(b"250 2.0.0 Ok\r\n")
            if not ok:
                return

    def _auth(self, peer: Peer, line: bytes) -> bool:
        words = line.split()
        if len(words) == 2 and words[1].upper() == b"PLAIN":  # the response after an empty 334
            if not peer.send(b"334 \r\n") or not peer.readline():
                return False
        if len(words) == 2 and words[1].upper() == b"LOGIN":
            for prompt in (b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n"):
                if not peer.send(prompt) or not peer.readline():
                    return False
        return self._step(peer, "auth", line)

    def _message(self, peer: Peer) -> bool:
        lines = []
        while True:
            line = peer.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b"..") else line)
        raw = b"".join(lines)
        self.messages.append(raw)
        step = self.steps["message"]
        if callable(step):
            return bool(step(peer, raw))
        self.deliver(raw)
        return self._step(peer, "message")


# -- IMAP ------------------------------------------------------------------------------------------

CAPABILITIES = "IMAP4rev1 UIDPLUS AUTH=PLAIN"
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def imap_date(moment: datetime.datetime) -> str:
    return moment.strftime("%d-") + _MONTHS[moment.month - 1] + moment.strftime("-%Y %H:%M:%S %z")


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    return word


def _words(text: str) -> list[str]:
    return re.findall(r'"(?:[^"\\]|\\.)*"|\([^)]*\)|\S+', text)


class ImapFake(FakeServer):
    """A working IMAP server over a Mailbox.  Keywords replace a command's
    handling: ``select=handler`` is called as handler(peer, tag, args) for
    SELECT and EXAMINE (``search``, ``fetch``, ``logout``, ``login``,
    ``status``, ``list``, ``starttls`` likewise); ``greeting`` is bytes or
    handler(peer).  A handler returns True to go on with the session.

    ``uid_after_literal`` puts the UID after the literal in FETCH responses
    (as Exchange does); ``list_lines`` are the untagged LIST responses
    (without "* LIST "); ``uidnext_text`` replaces SELECT's UIDNEXT value."""

    def __init__(
        self,
        mailbox: Mailbox,
        capabilities: str = CAPABILITIES,
        uid_after_literal: bool = False,
        list_lines: tuple[bytes, ...] = (),
        uidnext_text: str | None = None,
        internaldate_text: str | None = None,
        **handlers: bytes | Callable[..., bool | None],
    ):
        self.mailbox, self.capabilities = mailbox, capabilities
        self.uid_after_literal, self.list_lines = uid_after_literal, list_lines
        self.uidnext_text, self.internaldate_text = uidnext_text, internaldate_text
        self.handlers = handlers
        self.commands: list[str] = []
        super().__init__(self._session)

    def _session(self, peer: Peer) -> None:
        greeting = self.handlers.get(
            "greeting", b"* OK [CAPABILITY " + self.capabilities.encode() + b"] fake ready\r\n"
        )
        if callable(greeting):
            if not greeting(peer):
                return
        elif not peer.send(greeting):
            return
        selected = None
        while True:
            line = peer.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "UID":
                command, _, args = args.partition(" ")
                command = command.upper()
            self.commands.append(command)
            name = {"EXAMINE": "select"}.get(command, command.lower())
            handler = self.handlers.get(name)
            if handler is not None:
                if callable(handler):
                    if not handler(peer, tag, args):
                        return
                    continue
                peer.send(handler.replace(b"TAG", tag.encode()))
                continue
            reply, selected = self._answer(peer, tag, command, args, selected)
            if reply is None or not peer.send(reply):
                return

    def _answer(self, peer: Peer, tag: str, command: str, args: str, selected: str | None):
        ok = f"{tag} OK {command} completed\r\n".encode()
        box = self.mailbox
        if command == "CAPABILITY":
            return f"* CAPABILITY {self.capabilities}\r\n".encode() + ok, selected
        if command == "NOOP":
            return ok, selected
        if command == "LOGIN":
            return f"{tag} OK [CAPABILITY {self.capabilities}] Logged in\r\n".encode(), selected
        if command == "AUTHENTICATE":
            if not peer.send(b"+ \r\n") or not peer.readline():
                return None, selected
            return f"{tag} OK [CAPABILITY {self.capabilities}] Logged in\r\n".encode(), selected
        if command == "LOGOUT":
            peer.send(b"* BYE logging out\r\n" + ok)
            return None, selected
        if command in ("SELECT", "EXAMINE", "STATUS"):
            folder = _unquote(_words(args)[0])
            if folder not in box.folders:
                return f"{tag} NO [NONEXISTENT] Mailbox doesn't exist: {folder}\r\n".encode(), selected
            if command == "STATUS":
                return f'* STATUS "{folder}" (UIDNEXT {box.uid_next[folder]})\r\n'.encode() + ok, selected
            uid_next = self.uidnext_text or str(box.uid_next[folder])
            untagged = (
                f"* {len(box.folders[folder])} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n"
                f"* OK [UIDNEXT {uid_next}] Predicted next UID\r\n"
            )
            access = "READ-ONLY" if command == "EXAMINE" else "READ-WRITE"
            return f"{untagged}{tag} OK [{access}] {command} completed\r\n".encode(), folder
        if command == "LIST":
            return b"".join(b"* LIST " + line + b"\r\n" for line in self.list_lines) + ok, selected
        messages = [m for m in box.folders.get(selected or "", []) if not m.deleted]
        if command == "SEARCH":
            found = [str(m.uid) for m in messages if _matches(m, args)]
            return f"* SEARCH {' '.join(found)}\r\n".encode() + ok, selected
        if command == "FETCH":
            uid_set, _, items = args.partition(" ")
            wanted = {int(u) for u in uid_set.split(",") if u.isdigit()}
            return b"".join(
                self._fetched(i + 1, m, items) for i, m in enumerate(messages) if m.uid in wanted
            ) + ok, selected
        if command == "STORE":
            for m in messages:
                if str(m.uid) in args.split()[0].split(","):
                    m.deleted = True
            return ok, selected
        if command == "EXPUNGE":
            gone = [m for m in box.folders.get(selected or "", []) if m.deleted]
            box.expunged += [m.uid for m in gone]
            box.folders[selected or ""] = [m for m in box.folders.get(selected or "", []) if not m.deleted]
            return ok, selected
        return f"{tag} BAD unknown command\r\n".encode(), selected

    def _fetched(self, number: int, message: Message, items: str) -> bytes:
        upper = items.upper()
        if "INTERNALDATE" in upper:
            date = self.internaldate_text or imap_date(message.internaldate)
            parts = [b'INTERNALDATE "' + date.encode() + b'"']
            return self._response(number, message.uid, parts, None, b"")
        if "HEADER.FIELDS" in upper:
            section, literal = b"BODY[HEADER.FIELDS (SUBJECT)]", message.subject
        elif "HEADER" in upper:
            section, literal = b"BODY[HEADER]", message.header
        else:
            section, literal = b"BODY[]<0>", message.raw
        return self._response(number, message.uid, [], section, literal)

    def _response(
        self, number: int, uid: int, parts: list[bytes], section: bytes | None, literal: bytes
    ) -> bytes:
        uid_item = b"UID %d" % uid
        head = b"* %d FETCH (" % number
        if section is None:
            return head + b" ".join([uid_item, *parts]) + b")\r\n"
        body = section + b" {%d}\r\n" % len(literal) + literal
        if self.uid_after_literal:
            return head + body + b" " + uid_item + b" FLAGS (\\Seen))\r\n"
        return head + uid_item + b" " + body + b")\r\n"


def _matches(message: Message, args: str) -> bool:
    """Just enough of SEARCH: UID n:*, SINCE/BEFORE a day, and the quoted
    words (all of them must be in the message; with OR, any)."""
    words = _words(args)
    upper = [w.upper() for w in words]
    if "UID" in upper:
        low = words[upper.index("UID") + 1].split(":")[0]
        if message.uid < int(low):
            return False
    for key in ("SINCE", "BEFORE"):
        if key in upper:
            day = datetime.datetime.strptime(words[upper.index(key) + 1], "%d-%b-%Y").date()
            stored = message.internaldate.date()
            if (key == "SINCE" and stored < day) or (key == "BEFORE" and stored >= day):
                return False
    quoted = [_unquote(w).lower().encode() for w in words if w.startswith('"')]
    raw = message.raw.lower()
    hits = [q in raw for q in quoted]
    return any(hits) if "OR" in upper else all(hits)


# -- running the plugin and measuring it ------------------------------------------------------------


# Runs the plugin as its child and writes the child's ru_maxrss (KiB) to
# argv[1].  The kernel counts into a process's peak RSS the image of the
# process it was forked from (pytest, hundreds of MiB in a full run): a small
# interpreter in between forks the plugin from an image of a few MiB.
_MEASURE = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_measured(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[PluginRun, float]:
    """The installed plugin, as conftest.run_plugin runs it; also its peak
    RSS in MiB, from the kernel (wait4's ru_maxrss of the plugin process)."""
    executable = shutil.which(PLUGIN)
    assert executable, f"{PLUGIN} is not installed"
    full_env = {key: value for key, value in os.environ.items() if key not in PASSWORD_ENV}
    full_env["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="cer-fake-state-")
    full_env.update(env or {})
    peak_file = os.path.join(full_env["XDG_STATE_HOME"], "peak-rss")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, peak_file, executable, *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with open(peak_file) as file:
            peak = int(file.read()) / 1024.0
    finally:
        shutil.rmtree(full_env["XDG_STATE_HOME"], ignore_errors=True)
    run = PluginRun(list(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    return run, peak


def password_file(directory, password: str = "fake-password", name: str = "password") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    os.chmod(path, 0o600)
    return path


def fake_args(smtp: FakeServer | None, imap: FakeServer | None, password: str, *extra: str) -> list[str]:
    """Options for a run against the fakes: plain text both ways, no SMTP AUTH."""
    args = ["--from", "probe@example.test", "--helo", "probe.example.test"]
    if smtp is not None:
        args += ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port), "--smtp-security", "none"]
    if imap is not None:
        args += [
            "--imap-host",
            "127.0.0.1",
            "--imap-port",
            str(imap.port),
            "--imap-security",
            "none",
            "--imap-user",
            "probe@example.test",
            "--imap-password-file",
            password,
        ]
    return args + list(extra)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
