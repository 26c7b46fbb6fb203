"""The floor under a round trip: what no plugin on this machine can avoid.

- the MTA's own delivery time (row 2's ground truth, measured there);
- a bare interpreter start with the imports a round trip needs;
- one TLS handshake per protocol, by a tiny stdlib client against the stack:
  submission (connect, greeting, EHLO, STARTTLS, handshake) and IMAPS
  (connect, handshake).
"""

from __future__ import annotations

import re
import socket
import ssl
import time

from runner import Proc, run

ROUNDTRIP_IMPORTS = "import nagiosplugin, smtplib, imaplib, ssl, email.parser, authres"


def interpreter_start(python: str) -> Proc:
    return run([python, "-c", ROUNDTRIP_IMPORTS])


def _smtp_reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) SMTP reply."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"SMTP server closed the connection after {buf!r}")
        buf += chunk
        last = buf.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        if buf.endswith(b"\n") and re.match(rb"\d{3} ", last):
            return buf


def smtp_starttls_seconds(st: dict, ctx: ssl.SSLContext) -> float:
    """TCP connect, 220 greeting, EHLO, STARTTLS, TLS handshake (certificate verified)."""
    t0 = time.perf_counter()
    raw = socket.create_connection((st["host"], st["ports"]["submission"]), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        _smtp_reply(raw)
        raw.sendall(b"EHLO bench.example.test\r\n")
        _smtp_reply(raw)
        raw.sendall(b"STARTTLS\r\n")
        if not _smtp_reply(raw).startswith(b"220"):
            raise ConnectionError("STARTTLS refused")
        tls = ctx.wrap_socket(raw, server_hostname=st["tls_hostname"])
    except BaseException:
        raw.close()
        raise
    seconds = time.perf_counter() - t0
    try:
        tls.sendall(b"QUIT\r\n")
        _smtp_reply(tls)
    except OSError:
        pass
    tls.close()
    return seconds


def imaps_tls_seconds(st: dict, ctx: ssl.SSLContext) -> float:
    """TCP connect and TLS handshake to IMAPS (certificate verified); no greeting read."""
    t0 = time.perf_counter()
    raw = socket.create_connection((st["host"], st["ports"]["imaps"]), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=st["tls_hostname"])
    except BaseException:
        raw.close()
        raise
    seconds = time.perf_counter() - t0
    try:
        tls.sendall(b"a LOGOUT\r\n")
        tls.recv(4096)
    except OSError:
        pass
    tls.close()
    return seconds
