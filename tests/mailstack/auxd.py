#!/usr/bin/python3
"""auxd: the mail stack's own small daemon, one process with two kinds of service.

* A Postfix policy service (greylisting) on host:greylist_port.  Postfix
  asks it only for +greylist recipients (a restriction class on the inbound
  MX).  A message is (client_address, sender, recipient, size): the answer is
  greylist_action ("defer_if_permit ...") until it was first seen N s ago,
  then "dunno", and the entry is forgotten (the next message waits again).
  N is read from greylist_seconds_file when a message is first seen.
* Implicit-TLS fronts (cfg["fronts"]), each presenting its certificate and
  passing the plaintext on to its backend: "imaps-expired" (the EXPIRED
  certificate -> Dovecot IMAP; Dovecot 2.3 cannot give one port of an
  address a certificate of its own), and the TLS-1.0-only "smtps-tls10" (-> the
  inbound MX) and "imaps-tls10" (-> Dovecot IMAP), which negotiate TLSv1
  and nothing newer (a server nobody should still run, for the plugin's
  protocol-version warning).

Run as ``python3 auxd.py CONFIG.json`` as root: it binds its ports and reads
the key, becomes a daemon (the parent exits 0 once it serves), writes its
pid file and drops to cfg["user"].  Standard library only, and nothing from
the rest of the mail stack: the stack runs a copy of this file with the
system's python3.
"""

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
import warnings

LOG_LOCK = threading.Lock()


def log(msg, program="auxd"):
    """One line on stderr (the log file, once a daemon), microsecond stamps.
    program: who says it (idp.py borrows this and the daemon plumbing below)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    with LOG_LOCK:
        sys.stderr.write(f"{stamp}.{int((now % 1) * 1e6):06d} {program}: {msg}\n")
        sys.stderr.flush()


def listen(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def serve(sock, handler):
    """Accept until the socket is closed; each connection in a thread of its own."""
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            if sock.fileno() < 0:
                return
            continue
        threading.Thread(target=handler, args=(conn, peer), daemon=True).start()


# -- the Postfix policy protocol ---------------------------------------------
def read_policy_request(stream):
    """One policy request: name=value lines up to an empty line, as a dict.
    None at end of input (Postfix closed the connection)."""
    attrs = {}
    while True:
        line = stream.readline()
        if not line:
            return None
        line = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            return attrs
        name, _, value = line.partition("=")
        attrs[name] = value


def policy_reply(action):
    return f"action={action}\n\n".encode()


def read_greylist_seconds(path, default):
    """N from the first word of the file; default when it is missing or no number."""
    try:
        with open(path) as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float(default)


class Greylist:
    """The greylisting decision, and the policy connection that asks for it.
    clock: time.time, or a test's own."""

    def __init__(self, cfg, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.seen = {}            # message key -> (first seen, N it was given)
        self.lock = threading.Lock()

    def seconds(self):
        return read_greylist_seconds(self.cfg["greylist_seconds_file"], self.cfg["greylist_default_seconds"])

    @staticmethod
    def key(attrs):
        return (attrs.get("client_address", ""), attrs.get("sender", "").lower(),
                attrs.get("recipient", "").lower(), attrs.get("size", ""))

    def decide(self, attrs):
        """(action, key, why) for a policy request's attributes."""
        key = self.key(attrs)
        now = self.clock()
        stale = float(self.cfg["greylist_stale_seconds"])
        defer = self.cfg["greylist_action"]
        with self.lock:
            for k, (first, n) in list(self.seen.items()):
                if now - first > n + stale:       # its message never came back
                    del self.seen[k]
            entry = self.seen.get(key)
            if entry is None:
                n = self.seconds()
                if n <= 0:
                    return "dunno", key, "greylisting off (N=0)"
                self.seen[key] = (now, n)
                return defer, key, f"first seen, N={n:g}s"
            first, n = entry
            age = now - first
            if age >= n:
                del self.seen[key]
                return "dunno", key, f"passed after {age:.3f}s (N={n:g}s)"
            return defer, key, f"age {age:.3f}s < N={n:g}s"

    def answer(self, attrs):
        """The action for one request (anything but a policy request: dunno),
        logged."""
        if attrs.get("request") != "smtpd_access_policy":
            action, key, why = "dunno", None, "not a policy request"
        else:
            action, key, why = self.decide(attrs)
        log(f"greylist {key} -> action={action} ({why}) queue_id={attrs.get('queue_id', '')}")
        return action

    def handle(self, conn, peer):
        """A policy connection: requests and replies until Postfix closes it."""
        try:
            stream = conn.makefile("rwb")
            while True:
                attrs = read_policy_request(stream)
                if attrs is None:
                    return
                stream.write(policy_reply(self.answer(attrs)))
                stream.flush()
        except OSError as exc:
            log(f"greylist connection error: {exc}")
        finally:
            conn.close()


# -- the TLS fronts ------------------------------------------------------------
def server_context(cert, key, tls_version=None):
    """A server context with cert/key: TLS 1.2 and up, or exactly
    tls_version ("TLSv1", "TLSv1_1").  OpenSSL 3's default security level
    refuses TLS 1.0/1.1 handshakes (their signatures use SHA-1): @SECLEVEL=0."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if tls_version:
        with warnings.catch_warnings():      # "ssl.TLSVersion.TLSv1 is deprecated": the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[tls_version]
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class TLSFront:
    """Implicit TLS with a certificate, then bytes both ways to a backend.
    front: "cert", "key", "backend" [host, port] ("imap_backend" for the
    original expired-certificate front), optional "name" (for the log) and
    "tls_version" (see server_context)."""

    def __init__(self, front):
        self.name = front.get("name", "imaps-expired")
        self.backend = tuple(front.get("backend") or front["imap_backend"])
        self.ctx = server_context(front["cert"], front["key"], front.get("tls_version"))

    def handle(self, conn, peer):
        upstream = None
        try:
            conn.settimeout(15)
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                # a bare TCP probe (status) closes at once: not worth a line
                if not isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, socket.timeout)) \
                        and "EOF" not in str(exc):
                    log(f"{self.name} {peer[0]}:{peer[1]} handshake failed: {exc}")
                conn.close()
                return
            host, port = self.backend
            upstream = socket.create_connection((host, port), timeout=15)
            tls.settimeout(None)
            upstream.settimeout(None)
            log(f"{self.name} {peer[0]}:{peer[1]} connected ({tls.version()}, {tls.cipher()[0]}), "
                f"-> {host}:{port}")
            relay(tls, upstream)
        except (ssl.SSLError, OSError):
            pass
        finally:
            for sock in (upstream, conn):
                try:
                    if sock is not None:
                        sock.close()
                except OSError:
                    pass


def relay(tls, upstream, idle_timeout=600):
    """Copy bytes both ways until one side closes or nothing moves for idle_timeout s.
    TLS may hold decrypted bytes that select() cannot see: read those first."""
    while True:
        if tls.pending():
            ready = [tls]
        else:
            ready, _, _ = select.select([tls, upstream], [], [], idle_timeout)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (upstream if sock is tls else tls).sendall(data)


# -- the daemon -----------------------------------------------------------------
def daemonize(cfg):
    """Fork twice; the first parent exits 0 once the daemon says "ok" on the
    pipe (1 if it never does).  Returns the pipe's write end, in the daemon."""
    rfd, wfd = os.pipe()
    if os.fork():
        os.close(wfd)
        ok = os.read(rfd, 16) == b"ok"
        os._exit(0 if ok else 1)
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)
    with open(cfg["pidfile"] + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.rename(cfg["pidfile"] + ".tmp", cfg["pidfile"])
    return wfd


def redirect_stdio(logf):
    """stdin from /dev/null, stdout and stderr to the (open) log file."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(logf.fileno(), 1)
    os.dup2(logf.fileno(), 2)


def drop_privileges(user):
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        cfg = json.load(fh)
    host = cfg["host"]
    # as root: the ports, the keys, and the log file (the stack's, root's)
    greylist_sock = listen(host, cfg["greylist_port"])
    fronts = [(listen(front.get("host", host), front["port"]), TLSFront(front)) for front in cfg["fronts"]]
    greylist = Greylist(cfg)
    logf = open(cfg["log"], "a")
    ready_fd = daemonize(cfg)
    redirect_stdio(logf)
    os.chdir("/")
    drop_privileges(cfg["user"])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for sock, handler in [(greylist_sock, greylist.handle), *((s, f.handle) for s, f in fronts)]:
        threading.Thread(target=serve, args=(sock, handler), daemon=True).start()
    described = ", ".join(f"{f.name} {host}:{s.getsockname()[1]} -> {f.backend[0]}:{f.backend[1]}"
                          for s, f in fronts)
    log(f"started pid {os.getpid()}: greylist policy {host}:{cfg['greylist_port']}, {described}")
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
