#!/usr/bin/python3
"""idp: the mail stack's OAuth2 authorization server ("IdP"), one process.

HTTPS on host:port (HTTP/1.1 keep-alive, Content-Length on every answer:
Dovecot reuses its connection), the TLS handshake in each connection's own
thread so that a silent client cannot block accept().  It serves:

POST /token       RFC 6749, application/x-www-form-urlencoded.  The client
                  authenticates with client_id + client_secret in the body or
                  with HTTP Basic (2.3.1), never both; a public client sends
                  its client_id alone.  Grants:
    client_credentials  a token for the one mailbox the client may use
                        (Microsoft 365 app-only style)
    refresh_token       the strictest rotation: a new access token AND a new
                        refresh token; the one sent is dead from then on
    optional scope (a subset of the client's, or of the refresh token's).
    200 {"access_token", "token_type": "Bearer", "expires_in", "scope"
    [, "refresh_token"]} with Cache-Control: no-store; errors (5.2)
    {"error", "error_description"}: invalid_client 401 with
    WWW-Authenticate, invalid_request, invalid_grant, unauthorized_client,
    unsupported_grant_type, invalid_scope 400.
POST /introspect  RFC 7662 as Dovecot's oauth2 passdb asks (token, client_id,
                  client_secret in the body; the client must be allowed to
                  introspect): a live access token -> 200 {"active": true,
                  "email": <user>, ...} (flat); anything else, refresh tokens
                  included -> 200 {"active": false} (Dovecot reads a 4xx as a
                  temporary failure, not as a bad token).
GET /.well-known/oauth-authorization-server   RFC 8414 metadata.
/admin/<action>   the tests' controls (ADMIN_ACTIONS), JSON in and out,
                  Authorization: Bearer <the admin secret>, loopback peers only.

The rules, the tokens and the knobs (slow or failing endpoints, counters)
are authserver.py's; this file is HTTP.  Tokens live in memory: a restart
forgets them.

Run as ``python3 idp.py CONFIG.json`` as root: it binds its port, reads the
key and the secrets, becomes a daemon (the parent exits 0 once it serves),
writes its pid file and drops to cfg["user"].  Standard library only, plus
authserver.py and auxd.py's daemon plumbing: the stack copies both beside
this file.
"""

import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import secrets
import signal
import socketserver
import ssl
import sys
import time
import traceback
import urllib.parse

try:                        # in the package: tests import mailstack.idp
    from . import authserver, auxd
except ImportError:         # the stack's copy, run as a script beside copies of both
    import authserver
    import auxd

FORM = "application/x-www-form-urlencoded"
REALM = "mailstack-idp"
MAX_BODY = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
# longer than any client keeps an idle connection, so the client closes first
# and never sends a request into a connection we are closing
IDLE_TIMEOUT = 300.0
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))

# POST /admin/<action> with a JSON object of arguments -> the JSON answer
ADMIN_ACTIONS = {
    "issue-token": lambda idp, a: idp.issue_token(a["user"], a.get("lifetime", 3600), a.get("scope"),
                                                  a.get("length")),
    "issue-refresh-token": lambda idp, a: idp.issue_refresh_token(a["user"], a["client_id"],
                                                                  a.get("scope"), a.get("lifetime")),
    "revoke-token": lambda idp, a: {"revoked": idp.revoke_token(a["token"])},
    "revoke-refresh-token": lambda idp, a: {"revoked": idp.revoke_refresh_token(a["refresh_token"])},
    "token-state": lambda idp, a: idp.token_state(a["token"]),
    "endpoint": lambda idp, a: idp.set_endpoint(**a),
    "client": lambda idp, a: idp.set_client(a["client_id"], a.get("expires_in")),
    "reset": lambda idp, a: idp.reset() or {"reset": True},
    "reset-counters": lambda idp, a: idp.reset_counters() or {"reset": True},
    "state": lambda idp, a: idp.state(),
}


def log(msg):
    auxd.log(msg, "idp")


def fingerprint(token):
    """A token's name in the log: the start of its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive: Dovecot reuses its connection
    server_version = "mailstack-idp"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def setup(self):
        # the handshake here, in this connection's thread, not in accept()'s
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        log(f"{self.client_address[0]}:{self.client_address[1]} {fmt % args}")

    def log_request(self, code="-", size="-"):
        pass        # each request logs one line of its own, with what it meant

    def answer(self, status, payload, headers=(), content_type="application/json"):
        """Status, headers with Content-Length, body; returns the status."""
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        return status

    def read_body(self):
        """The request body, or None after answering 411/413 (then the
        connection closes: its unread body would be taken for a request)."""
        length = self.headers.get("Content-Length", "").strip()
        close = [("Connection", "close")]       # send_header() then closes it after the answer
        if not length.isdigit() or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.answer(411, {"error": "invalid_request", "error_description": "Content-Length required"},
                        close)
            return None
        if int(length) > MAX_BODY:
            self.answer(413, {"error": "invalid_request", "error_description": "body too large"}, close)
            return None
        return self.rfile.read(int(length))

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/.well-known/oauth-authorization-server":
            issuer = self.server.idp.issuer
            self.answer(200, {"issuer": issuer, "token_endpoint": issuer + "/token",
                              "introspection_endpoint": issuer + "/introspect",
                              "grant_types_supported": list(authserver.GRANT_TYPES),
                              "token_endpoint_auth_methods_supported": [
                                  "client_secret_post", "client_secret_basic", "none"]})
        elif path == "/admin/state":
            self.admin("state")
        elif path in ("/token", "/introspect") or path.startswith("/admin/"):
            self.answer(405, {"error": "invalid_request", "error_description": "use POST"},
                        [("Allow", "POST")])
        else:
            self.answer(404, {"error": "not_found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/token", "/introspect"):
            self.oauth_endpoint(path[1:])
        elif path.startswith("/admin/"):
            self.admin(path[len("/admin/"):])
        elif self.read_body() is not None:
            self.answer(404, {"error": "not_found"})

    def oauth_endpoint(self, endpoint):
        """/token or /introspect: count it, apply the endpoint's knob, answer,
        log one line (no secrets, tokens by fingerprint)."""
        idp = self.server.idp
        body = self.read_body()
        if body is None:
            return
        note = {"endpoint": endpoint}
        form, error = None, None
        try:
            if self.headers.get_content_type() != FORM:
                raise authserver.OAuthError("invalid_request", f"Content-Type must be {FORM}")
            form = authserver.parse_form(body)
            for name in ("grant_type", "scope", "client_id"):
                note[name] = authserver.single(form, name)
        except authserver.OAuthError as exc:
            error = exc
        authorization = self.headers.get("Authorization")
        note["client_auth"] = "basic" if authorization else "body" if note.get("client_id") else "none"
        idp.count(endpoint, (note.get("grant_type") or "(none)") if endpoint == "token" else "requests")
        knob = idp.take_behaviour(endpoint)
        if knob["delay"] > 0:
            time.sleep(knob["delay"])
        if knob["status"] is not None:
            note["status"] = self.answer(knob["status"], knob["body"], content_type=knob["content_type"])
            note["fault"] = True
        else:
            try:
                if error is not None:
                    raise error
                if endpoint == "token":
                    result = idp.token(form, authorization)
                else:
                    result = idp.introspect(form, authorization)
                    note.update(token=fingerprint(authserver.single(form, "token")), active=result["active"],
                                user=result.get("email"))
                note["status"] = self.answer(200, result, NO_STORE)
            except authserver.OAuthError as exc:
                headers = list(NO_STORE)
                if exc.status == 401:
                    headers.append(("WWW-Authenticate", f'Basic realm="{REALM}"'))
                note["status"] = self.answer(exc.status, exc.payload(), headers)
                note.update(error=exc.error, error_description=exc.description)
        idp.record(note)
        self.log_message("POST /%s -> %s", endpoint,
                         " ".join(f"{k}={v}" for k, v in note.items() if k != "endpoint" and v is not None))

    def admin(self, action):
        body = self.read_body() if self.command == "POST" else b""
        if body is None:
            return
        expected = f"Bearer {self.server.admin_secret}".encode()
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self.answer(403, {"error": "the admin interface is for loopback clients"})
        elif not hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected):
            self.answer(401, {"error": "admin secret required"},
                        [("WWW-Authenticate", f'Bearer realm="{REALM}"')])
        elif action not in ADMIN_ACTIONS:
            self.answer(404, {"error": f"no admin action {action!r}", "actions": sorted(ADMIN_ACTIONS)})
        else:
            try:
                args = json.loads(body or b"{}")
                if not isinstance(args, dict):
                    raise TypeError("arguments must be a JSON object")
                result = ADMIN_ACTIONS[action](self.server.idp, args)
            except (ValueError, KeyError, TypeError) as exc:
                self.answer(400, {"error": f"{type(exc).__name__}: {exc}"})
                self.log_message("admin %s -> 400 %s", action, exc)
                return
            self.answer(200, result)
            if action != "state":
                self.log_message("admin %s -> 200", action)


class IdPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Threaded HTTP(S) for an authserver.AuthorizationServer.  The TLS
    handshake is left to each connection's thread (Handler.setup): done in
    accept(), one silent client would stop everyone."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, idp, ssl_context=None, admin_secret=None):
        self.idp = idp
        self.ssl_context = ssl_context
        self.admin_secret = admin_secret or secrets.token_urlsafe(24)
        super().__init__(address, Handler)

    def get_request(self):
        conn, peer = self.socket.accept()
        if self.ssl_context is not None:
            conn = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, peer

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        # a bare TCP probe ("status", readiness) closes at once: not worth a line
        if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)) or "EOF" in str(exc):
            return
        log(f"{client_address[0]}:{client_address[1]} connection error: {type(exc).__name__}: {exc}")
        if not isinstance(exc, OSError):        # a bug of ours: the whole story
            log(traceback.format_exc().rstrip())


def server_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def read_secret(path):
    with open(path) as fh:
        return fh.read().strip()


def load_clients(configured):
    """The config's clients with their secrets read from their files
    (public clients have none)."""
    clients = {}
    for client_id, client in configured.items():
        clients[client_id] = dict(client)
        secret_file = clients[client_id].pop("secret_file", None)
        clients[client_id]["secret"] = read_secret(secret_file) if secret_file else None
    return clients


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        cfg = json.load(fh)
    # as root: the port, the key, the secrets and the log file
    idp = authserver.AuthorizationServer(load_clients(cfg["clients"]), issuer=cfg["issuer"])
    server = IdPServer((cfg["host"], cfg["port"]), idp, server_context(cfg["cert"], cfg["key"]),
                       read_secret(cfg["admin_secret_file"]))
    logf = open(cfg["log"], "a")
    ready_fd = auxd.daemonize(cfg)
    auxd.redirect_stdio(logf)
    os.chdir("/")
    auxd.drop_privileges(cfg["user"])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    log(f"started pid {os.getpid()}: https://{cfg['host']}:{cfg['port']} issuer {cfg['issuer']}, "
        f"clients {', '.join(sorted(idp.clients))}")
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    server.serve_forever()


if __name__ == "__main__":
    main()
