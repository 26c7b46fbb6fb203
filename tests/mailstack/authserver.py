"""The OAuth2 authorization server's rules and state, without HTTP: clients
and their authentication, the client_credentials and (rotating)
refresh_token grants, introspection, and the knobs the tests turn.  idp.py
serves it over HTTPS; see there for the endpoints.  Standard library only,
nothing from the rest of the mail stack: the stack runs a copy beside idp.py.
"""

import base64
import binascii
import collections
import hmac
import json
import secrets
import threading
import time
import urllib.parse

GRANT_TYPES = ("client_credentials", "refresh_token")
MAIL_SCOPES = ("imap", "smtp")       # what a token minted by the tests carries by default
ENDPOINTS = ("token", "introspect")
ADMIN_CLIENT = "mailstack-admin"     # client_id of tokens the tests mint directly
FORGET_AFTER = 3600.0     # expired tokens are kept this long (still inactive), then dropped
REQUEST_LOG_SIZE = 200


def new_token(length=None):
    """A random URL-safe token; `length` characters when given (a provider's
    JWT can be kilobytes long: tests need long ones too)."""
    token = secrets.token_urlsafe(32)
    if length:
        while len(token) < length:
            token += secrets.token_urlsafe(max(3, length - len(token)))
        token = token[:length]
    return token


class OAuthError(Exception):
    """An RFC 6749 5.2 error answer."""

    def __init__(self, error, description, status=400):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status

    def payload(self):
        return {"error": self.error, "error_description": self.description}


def invalid_client(description):
    return OAuthError("invalid_client", description, 401)


def single(form, name):
    """The one value of a form parameter, None when absent."""
    values = form.get(name)
    return values[0] if values else None


def parse_form(body):
    """A form-encoded body as {name: [value]}; a repeated parameter is an
    invalid_request (RFC 6749 3.2)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a UTF-8 form") from None
    form = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} given more than once")
        form[name] = [value]
    return form


def parse_basic(authorization):
    """(client_id, client_secret) from an HTTP Basic header; RFC 6749 2.3.1
    form-encodes both before base64."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client(f"unsupported Authorization scheme {scheme!r} (use Basic)")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("malformed HTTP Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_client("malformed HTTP Basic credentials (no ':')")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def normal_behaviour():
    return {"delay": 0.0, "status": None, "body": "", "content_type": "application/json", "times": None}


class AuthorizationServer:
    """The IdP's state and decisions, without HTTP.  clients: {client_id:
    {"secret": str or None (public), "grant_types": [...], "mailbox": user
    for client_credentials, "scopes": [...], "expires_in": s, "introspect":
    may call /introspect}}.  clock: time.time, or a test's own."""

    def __init__(self, clients, issuer="", clock=time.time):
        self.clients = {cid: dict(c) for cid, c in clients.items()}
        self.default_expires_in = {cid: c.get("expires_in", 3600) for cid, c in clients.items()}
        self.issuer = issuer
        self.clock = clock
        self.lock = threading.Lock()
        self.access = {}        # token -> {"user", "client_id", "scope", "iat", "exp", "revoked"}
        self.refresh = {}       # token -> {"user", "client_id", "scope", "exp", "lifetime", "state"}
        self.reset()

    def reset(self):
        """Counters to zero, both endpoints normal, every client's expires_in
        as configured.  Tokens stay."""
        with self.lock:
            self.behaviour = {name: normal_behaviour() for name in ENDPOINTS}
            for cid, seconds in self.default_expires_in.items():
                self.clients[cid]["expires_in"] = seconds
        self.reset_counters()

    def reset_counters(self):
        with self.lock:
            self.counts = {"token": collections.Counter(), "introspect": collections.Counter()}
            self.requests = collections.deque(maxlen=REQUEST_LOG_SIZE)

    # -- client authentication ------------------------------------------------
    def authenticate(self, form, authorization):
        """The client_id of the client making the request, or invalid_client."""
        body_id, body_secret = single(form, "client_id"), single(form, "client_secret")
        if authorization:
            client_id, secret = parse_basic(authorization)
            if body_secret is not None:
                raise OAuthError("invalid_request", "client authenticated twice: HTTP Basic and "
                                 "client_secret in the body")
            if body_id is not None and body_id != client_id:
                raise OAuthError("invalid_request", "client_id in the body differs from HTTP Basic")
        elif body_id is not None:
            client_id, secret = body_id, body_secret
        else:
            raise invalid_client("no client authentication (client_id and client_secret, or HTTP Basic)")
        client = self.clients.get(client_id)
        if client is None:
            raise invalid_client(f"unknown client {client_id!r}")
        if client.get("secret") is None:
            if secret:
                raise invalid_client(f"public client {client_id!r} must not send a client secret")
        elif not secret:
            raise invalid_client(f"client {client_id!r} sent no client secret")
        elif not hmac.compare_digest(secret.encode(), client["secret"].encode()):
            raise invalid_client(f"wrong client secret for {client_id!r}")
        return client_id

    # -- tokens -----------------------------------------------------------------
    @staticmethod
    def granted_scope(requested, allowed, whose):
        """The scope list for a request: all of `allowed` when none is asked
        for, else the asked-for subset (invalid_scope beyond it)."""
        if requested is None or not requested.strip():
            return list(allowed)
        wanted = list(dict.fromkeys(requested.split()))
        beyond = [s for s in wanted if s not in allowed]
        if beyond:
            raise OAuthError("invalid_scope", f"scope {' '.join(beyond)!r} is not granted to {whose} "
                             f"(granted: {' '.join(allowed)!r})")
        return wanted

    def _new_access(self, user, client_id, scope, lifetime, length=None):
        """A new access token (under self.lock) and its record."""
        now = self.clock()
        self._forget_expired(now)
        token = new_token(length)
        entry = {"user": user, "client_id": client_id, "scope": " ".join(scope),
                 "iat": now, "exp": now + lifetime, "revoked": False}
        self.access[token] = entry
        return token, entry

    def _new_refresh(self, user, client_id, scope, lifetime):
        now = self.clock()
        token = new_token()
        self.refresh[token] = {"user": user, "client_id": client_id, "scope": list(scope),
                               "exp": None if lifetime is None else now + lifetime,
                               "lifetime": lifetime, "state": "active"}
        return token

    def _forget_expired(self, now):
        for token, entry in list(self.access.items()):
            if entry["exp"] < now - FORGET_AFTER:
                del self.access[token]

    def token(self, form, authorization=None):
        """The /token answer for a parsed form, or OAuthError."""
        client_id = self.authenticate(form, authorization)
        client = self.clients[client_id]
        grant = single(form, "grant_type")
        if not grant:
            raise OAuthError("invalid_request", "missing parameter grant_type")
        if grant not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported "
                             f"(supported: {', '.join(GRANT_TYPES)})")
        if grant not in client.get("grant_types", ()):
            raise OAuthError("unauthorized_client", f"client {client_id!r} may not use grant_type {grant!r}")
        requested = single(form, "scope")
        with self.lock:
            lifetime = client["expires_in"]
            if grant == "client_credentials":
                scope = self.granted_scope(requested, client.get("scopes", ()), f"client {client_id!r}")
                token, entry = self._new_access(client["mailbox"], client_id, scope, lifetime)
                return self._answer(token, entry, lifetime)
            old = single(form, "refresh_token")
            if not old:
                raise OAuthError("invalid_request", "missing parameter refresh_token")
            grant_entry = self._live_refresh(old, client_id)
            scope = self.granted_scope(requested, grant_entry["scope"], "this refresh token")
            # rotation: the old one is used up; the new one carries the
            # original grant (RFC 6749 6), whatever this request narrowed
            grant_entry["state"] = "used"
            new = self._new_refresh(grant_entry["user"], client_id, grant_entry["scope"],
                                    grant_entry["lifetime"])
            token, entry = self._new_access(grant_entry["user"], client_id, scope, lifetime)
            return dict(self._answer(token, entry, lifetime), refresh_token=new)

    def _live_refresh(self, token, client_id):
        entry = self.refresh.get(token)
        if entry is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if entry["client_id"] != client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        if entry["state"] == "used":
            raise OAuthError("invalid_grant", "the refresh token was already used (it is rotated at "
                             "every refresh: use the one from the last answer)")
        if entry["state"] == "revoked":
            raise OAuthError("invalid_grant", "the refresh token was revoked")
        if entry["exp"] is not None and entry["exp"] <= self.clock():
            raise OAuthError("invalid_grant", "the refresh token has expired")
        return entry

    @staticmethod
    def _answer(token, entry, lifetime):
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(lifetime),
                "scope": entry["scope"]}

    def introspect(self, form, authorization=None):
        """The /introspect answer (RFC 7662 2.2) for a parsed form."""
        client_id = self.authenticate(form, authorization)
        if not self.clients[client_id].get("introspect"):
            raise invalid_client(f"client {client_id!r} may not introspect tokens")
        token = single(form, "token")
        if not token:
            raise OAuthError("invalid_request", "missing parameter token")
        with self.lock:
            entry = self.access.get(token)
            if entry is None or entry["revoked"] or entry["exp"] <= self.clock():
                return {"active": False}
            return {"active": True, "email": entry["user"], "username": entry["user"],
                    "sub": entry["user"], "client_id": entry["client_id"], "scope": entry["scope"],
                    "token_type": "Bearer", "iat": int(entry["iat"]), "exp": int(entry["exp"]),
                    "iss": self.issuer}

    # -- what the tests turn ---------------------------------------------------
    def issue_token(self, user, lifetime=3600, scope=None, length=None):
        """An access token for user straight away (the "token from a file"
        case); lifetime <= 0 gives one that has expired already."""
        scope = scope.split() if isinstance(scope, str) else list(scope or MAIL_SCOPES)
        with self.lock:
            token, entry = self._new_access(user, ADMIN_CLIENT, scope, float(lifetime), length)
        return {"access_token": token, "user": user, "scope": entry["scope"], "expires_in": lifetime,
                "expires_at": entry["exp"]}

    def issue_refresh_token(self, user, client_id, scope=None, lifetime=None):
        """A first refresh token for user, as a consent flow would hand out."""
        client = self.clients.get(client_id)
        if client is None or "refresh_token" not in client.get("grant_types", ()):
            raise ValueError(f"client {client_id!r} does not use refresh tokens")
        granted = self.granted_scope(scope, client.get("scopes", ()), f"client {client_id!r}")
        with self.lock:
            token = self._new_refresh(user, client_id, granted, lifetime)
        return {"refresh_token": token, "user": user, "client_id": client_id, "scope": " ".join(granted)}

    def revoke_token(self, token):
        """True when token was a known access token (now revoked)."""
        with self.lock:
            entry = self.access.get(token)
            if entry is not None:
                entry["revoked"] = True
            return entry is not None

    def revoke_refresh_token(self, token):
        with self.lock:
            entry = self.refresh.get(token)
            if entry is not None:
                entry["state"] = "revoked"
            return entry is not None

    def token_state(self, token):
        """What the IdP knows of a token, for assertions: kind, user, state."""
        now = self.clock()
        with self.lock:
            if token in self.access:
                e = self.access[token]
                state = "revoked" if e["revoked"] else "expired" if e["exp"] <= now else "active"
                return {"kind": "access", "user": e["user"], "client_id": e["client_id"],
                        "scope": e["scope"], "state": state, "expires_in": e["exp"] - now}
            if token in self.refresh:
                e = self.refresh[token]
                expired = e["exp"] is not None and e["exp"] <= now and e["state"] == "active"
                return {"kind": "refresh", "user": e["user"], "client_id": e["client_id"],
                        "scope": " ".join(e["scope"]), "state": "expired" if expired else e["state"]}
        return {"kind": None, "state": "unknown"}

    def set_client(self, client_id, expires_in=None):
        """expires_in (s) of the client's access tokens; None: as configured."""
        with self.lock:
            client = self.clients[client_id]
            client["expires_in"] = self.default_expires_in[client_id] if expires_in is None else expires_in
            return self.public_client(client_id)

    def public_client(self, client_id):
        client = self.clients[client_id]
        return {"client_id": client_id, "public": client.get("secret") is None,
                "grant_types": list(client.get("grant_types", ())), "mailbox": client.get("mailbox"),
                "scopes": list(client.get("scopes", ())), "expires_in": client.get("expires_in"),
                "introspect": bool(client.get("introspect"))}

    def set_endpoint(self, endpoint, delay=0.0, status=None, body="", content_type="application/json",
                     times=None):
        """How /token or /introspect answers from now: after `delay` s; with
        `status` and `body` instead of the real answer when status is set;
        for the next `times` requests (None: until changed).  No arguments:
        back to normal."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"no endpoint {endpoint!r} (one of {', '.join(ENDPOINTS)})")
        if status is not None and not 100 <= int(status) <= 599:
            raise ValueError(f"HTTP status out of range: {status!r}")
        if times is not None and int(times) < 1:
            raise ValueError(f"times must be at least 1 (or None: until changed): {times!r}")
        if not isinstance(body, str):
            body = json.dumps(body)
        with self.lock:
            self.behaviour[endpoint] = {"delay": float(delay),
                                        "status": None if status is None else int(status),
                                        "body": body, "content_type": content_type,
                                        "times": None if times is None else int(times)}
            return dict(self.behaviour[endpoint])

    def take_behaviour(self, endpoint):
        """The behaviour for one request to endpoint (a `times` knob counts down)."""
        with self.lock:
            current = self.behaviour[endpoint]
            if current["times"] is not None:
                current["times"] -= 1
                if current["times"] <= 0:
                    self.behaviour[endpoint] = normal_behaviour()
            return dict(current)

    def count(self, endpoint, kind):
        with self.lock:
            self.counts[endpoint][kind] += 1
            self.counts[endpoint]["total"] += 1

    def record(self, entry):
        with self.lock:
            self.requests.append(dict(entry, at=self.clock()))

    def state(self):
        with self.lock:
            counters = {name: dict(counter) for name, counter in self.counts.items()}
            behaviour = {name: dict(b) for name, b in self.behaviour.items()}
            requests = list(self.requests)
        return {"counters": counters, "endpoints": behaviour, "requests": requests,
                "clients": {cid: self.public_client(cid) for cid in self.clients}}
