"""What a daemon must answer on before it counts as ready.

A bare TCP connect is not always enough: dnsmasq must answer a query (over
UDP and TCP), rspamd's milter must answer option negotiation, its controller
GET /ping (a bare connect would log "unexpected EOF" in rspamd each time).
"""

import socket
from dataclasses import dataclass

from .config import DOMAIN
from .dnsclient import dns_query


@dataclass(frozen=True)
class Endpoint:
    kind: str          # "tcp", "unix", "dns", "milter" or "http"
    host: str = ""     # for every kind but "unix"
    port: int = 0
    path: str = ""     # for "unix"

    @property
    def name(self):
        if self.kind == "unix":
            return self.path
        if self.kind == "tcp":
            return f"{self.host}:{self.port}"
        return f"{self.kind} {self.host}:{self.port}"

    def is_open(self):
        """Does the endpoint answer as its daemon should?"""
        if self.kind == "unix":
            return unix_open(self.path)
        return _PROBES[self.kind](self.host, self.port)

    def is_busy(self):
        """Is the port taken (by something else, when our daemon is not running)?"""
        if self.kind == "unix":
            return False
        if self.kind == "dns":
            return tcp_open(self.host, self.port) or udp_busy(self.host, self.port)
        return tcp_open(self.host, self.port)


def tcp(host, port):
    return Endpoint("tcp", host, port)


def unix(path):
    return Endpoint("unix", path=path)


def tcp_open(host, port, timeout=0.3):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unix_open(path, timeout=0.3):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return True
        except OSError:
            return False


def udp_busy(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
            return False
        except OSError:
            return True


def dns_open(host, port, timeout=0.3):
    """Does a DNS server answer (anything) on host:port over UDP and TCP?"""
    try:
        dns_query(DOMAIN, "SOA", (host, port), timeout=timeout)
        dns_query(DOMAIN, "SOA", (host, port), timeout=timeout, tcp=True)
        return True
    except OSError:
        return False


def milter_open(host, port, timeout=0.5):
    """Does a milter answer option negotiation (SMFIC_OPTNEG) on host:port?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            body = b"O" + (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") \
                + (0x1FFFFF).to_bytes(4, "big")
            sock.sendall(len(body).to_bytes(4, "big") + body)
            head = b""
            while len(head) < 5:
                chunk = sock.recv(5 - len(head))
                if not chunk:
                    return False
                head += chunk
            ok = head[4:5] == b"O"
            try:
                sock.sendall((1).to_bytes(4, "big") + b"Q")     # SMFIC_QUIT
            except OSError:
                pass
            return ok
    except OSError:
        return False


def http_ping(host, port, timeout=0.5):
    """Does an rspamd controller answer GET /ping with "pong"?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
                if b"pong" in data:
                    return True
    except OSError:
        return False


_PROBES = {"tcp": tcp_open, "dns": dns_open, "milter": milter_open, "http": http_ping}
