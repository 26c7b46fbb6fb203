"""The stack's IMAP helpers for test set-up and isolation: a logged-in client,
APPEND with a chosen INTERNALDATE, the UIDs in a folder, emptying a folder.

Mailbox names go on the wire through the plugin's own encoder
(check_email_roundtrip.imapsyntax): modified UTF-7, quoted.
"""

import contextlib
import datetime
import imaplib
import re
import socket
import ssl

from check_email_roundtrip.imapsyntax import quote_mailbox

from .config import HOST, IMAPS_PORT, TLS_HOSTNAME
from .system import StackError


class StackIMAPS(imaplib.IMAP4_SSL):
    """IMAPS to HOST:IMAPS_PORT, certificate checked as TLS_HOSTNAME
    ("localhost" may resolve to ::1 first, where nothing listens)."""

    def __init__(self, ssl_context, timeout=30.0):
        self._mailstack_timeout = timeout
        super().__init__(TLS_HOSTNAME, IMAPS_PORT, ssl_context=ssl_context)

    def _create_socket(self, timeout=None):
        sock = socket.create_connection((HOST, self.port), timeout or self._mailstack_timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=TLS_HOSTNAME)


def mailbox(name):
    """A mailbox name as an IMAP quoted string (imaplib sends arguments as
    they are).  Already quoted names are left alone."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name
    return quote_mailbox(name)


def _text(data):
    return " ".join(d.decode(errors="replace") if isinstance(d, bytes) else str(d)
                    for d in (data or []) if d is not None)


def _missing(data):
    first = data[0] or b""
    return b"NONEXISTENT" in first or b"doesn't exist" in first


@contextlib.contextmanager
def session(ca, login, password, timeout=30.0):
    """A logged-in client over IMAPS, verified against the CA; logs out on exit."""
    client = StackIMAPS(ssl.create_default_context(cafile=ca), timeout)
    try:
        client.login(login, password)
    except imaplib.IMAP4.error as exc:
        client.shutdown()
        raise StackError(f"IMAP login as {login} failed: {exc}") from None
    try:
        yield client
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def append(client, owner, folder, raw, internaldate=None, flags=None, create=True):
    """APPEND raw to folder; see MailStack.append_message.  owner names the
    mailbox's user in errors."""
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
        flags = f"({flags})"
    name = mailbox(folder)
    typ, data = client.append(name, flags, date, raw)
    if typ != "OK" and create and b"[TRYCREATE]" in (data[0] or b""):
        client.create(name)
        client.subscribe(name)
        typ, data = client.append(name, flags, date, raw)
    if typ != "OK":
        raise StackError(f"IMAP APPEND to {folder} of {owner} failed: {_text(data)}")
    match = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0] or b"", re.I)
    return int(match.group(2)) if match else None


def uids(client, owner, folder, search="ALL"):
    """UIDs (ascending) matching search, read-only (EXAMINE); [] if no such folder."""
    if not isinstance(search, str):
        search = " ".join(search)
    typ, data = client.select(mailbox(folder), readonly=True)
    if typ != "OK":
        if _missing(data):
            return []
        raise StackError(f"IMAP EXAMINE {folder} of {owner} failed: {_text(data)}")
    typ, data = client.uid("SEARCH", search)
    if typ != "OK":
        raise StackError(f"IMAP UID SEARCH {search} in {folder} failed: {_text(data)}")
    return sorted(int(x) for x in b" ".join(d for d in data if d).split())


def expunge_all(client, owner, folder):
    """Delete every message in folder; the number removed (0 if no such folder)."""
    typ, data = client.select(mailbox(folder))
    if typ != "OK":
        if _missing(data):
            return 0
        raise StackError(f"IMAP SELECT {folder} of {owner} failed: {_text(data)}")
    if int(data[0] or 0) == 0:
        return 0
    typ, data = client.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
    if typ != "OK":
        raise StackError(f"IMAP STORE \\Deleted in {folder} failed: {_text(data)}")
    typ, data = client.expunge()
    if typ != "OK":
        raise StackError(f"IMAP EXPUNGE in {folder} failed: {_text(data)}")
    client.close()
    return len([d for d in data if d])
