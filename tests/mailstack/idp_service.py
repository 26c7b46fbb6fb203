"""The OAuth2 IdP as a service of the stack (its clients, secrets,
configuration and life cycle), and stack.oauth, the tests' handle on it.

The daemon is idp.py (HTTPS) with authserver.py (the rules) next to this
file.  The stack runs copies of both, and of auxd.py whose daemon plumbing
idp.py borrows, in DIR/idp with the system's python3, as it runs auxd: a
changed file restarts the IdP at the next up (tokens are in memory: gone).
"""

import http.client
import json
import os
import pathlib
import secrets
import ssl

from . import authserver, auxd, endpoints, idp
from .accounts import address
from .auxd_service import Auxd
from .config import HOST, IDP_PORT, TLS_HOSTNAME
from .procs import proc_cmdline
from .service import Service
from .system import StackError, make_dir, write_file

SOURCES = [pathlib.Path(module.__file__) for module in (idp, authserver, auxd)]

# The clients the IdP knows.  Secrets are made at the first up, one file each
# in DIR/secrets (0600); a public client has none.
APP_CLIENT = "probe-app"              # client_credentials -> probe@ (Microsoft 365 app-only style)
OTHER_APP_CLIENT = "other-app"        # client_credentials -> other@ (someone else's token)
REFRESH_CLIENT = "mail-client"        # refresh_token grant, confidential (secret)
PUBLIC_CLIENT = "mail-public"         # refresh_token grant, public: client_id alone
INTROSPECTION_CLIENT = "dovecot"      # Dovecot's oauth2 passdb: /introspect only
APP_SCOPES = list(authserver.MAIL_SCOPES)
DELEGATED_SCOPES = [*authserver.MAIL_SCOPES, "offline_access"]
DEFAULT_EXPIRES_IN = 3600
CLIENTS = {
    APP_CLIENT: {"grant_types": ["client_credentials"], "mailbox": "probe", "scopes": APP_SCOPES},
    OTHER_APP_CLIENT: {"grant_types": ["client_credentials"], "mailbox": "other", "scopes": APP_SCOPES},
    REFRESH_CLIENT: {"grant_types": ["refresh_token"], "scopes": DELEGATED_SCOPES},
    PUBLIC_CLIENT: {"grant_types": ["refresh_token"], "scopes": DELEGATED_SCOPES, "public": True},
    INTROSPECTION_CLIENT: {"grant_types": [], "introspect": True},
}
# Dovecot's wait for an introspection answer: under Postfix's 10 s wait for
# Dovecot's auth, so a slow IdP is a failed login and not a lost auth server
INTROSPECTION_TIMEOUT_MSECS = 5000


def oauth_user(user):
    """The user a token is for: "probe" -> probe@example.test; any address as given (lower case)."""
    return user.lower() if "@" in user else address(user)


class IdP(Service):
    name = "idp"
    packages = ()

    def __init__(self, stack):
        super().__init__(stack)
        self.conf_dir = os.path.join(stack.dir, "idp")
        self.script = os.path.join(self.conf_dir, "idp.py")
        self.conf = os.path.join(self.conf_dir, "idp.json")
        self.admin_secret_file = os.path.join(stack.secrets_dir, "oauth-admin.secret")
        self.cert, self.key = stack.certificates.idp_cert, stack.certificates.idp_key
        self.issuer = f"https://{TLS_HOSTNAME}:{IDP_PORT}"
        self.token_url = self.issuer + "/token"
        # Dovecot calls by address: nothing to resolve, and the certificate has it
        self.introspection_url = f"https://{HOST}:{IDP_PORT}/introspect"

    def secret_file(self, client_id):
        """The client's secret file; None for a public client."""
        if CLIENTS[client_id].get("public"):
            return None
        return os.path.join(self.stack.secrets_dir, f"oauth-{client_id}.secret")

    def secret(self, client_id):
        path = self.secret_file(client_id)
        if path is None:
            return None
        with open(path) as fh:
            return fh.read().strip()

    def ensure_secrets(self):
        """A random secret for every confidential client and the admin
        interface, made once and kept (like the users' passwords)."""
        files = [self.secret_file(c) for c in CLIENTS] + [self.admin_secret_file]
        for path in filter(None, files):
            if not os.path.exists(path):
                write_file(path, secrets.token_urlsafe(24) + "\n", 0o600)

    def pidfile(self):
        return os.path.join(self.conf_dir, "idp.pid")

    def matches(self, pid):
        cmd = proc_cmdline(pid)
        return self.script in cmd and self.conf in cmd

    def endpoints(self):
        return [endpoints.tcp(HOST, IDP_PORT)]

    def clients(self):
        """The clients as configured: {client_id: {...}} (no secrets, their files)."""
        return {client_id: {"client_id": client_id, "secret_file": self.secret_file(client_id),
                            "public": bool(client.get("public")),
                            "grant_types": list(client["grant_types"]),
                            "mailbox": address(client["mailbox"]) if "mailbox" in client else None,
                            "scopes": list(client.get("scopes", ())),
                            "expires_in": DEFAULT_EXPIRES_IN,
                            "introspect": bool(client.get("introspect"))}
                for client_id, client in CLIENTS.items()}

    def info(self):
        return {"issuer": self.issuer, "token_url": self.token_url,
                "introspection_url": self.introspection_url,
                "metadata_url": self.issuer + "/.well-known/oauth-authorization-server",
                "port": IDP_PORT, "ca": self.stack.ca, "cert": self.cert, "key": self.key,
                "admin": {"url": self.issuer + "/admin/", "secret_file": self.admin_secret_file,
                          "authorization": "Bearer <the secret file's content>",
                          "actions": sorted(idp.ADMIN_ACTIONS)},
                "clients": self.clients(),
                "app_client": APP_CLIENT, "other_app_client": OTHER_APP_CLIENT,
                "refresh_client": REFRESH_CLIENT, "public_client": PUBLIC_CLIENT,
                "introspection_client": INTROSPECTION_CLIENT,
                "introspection_timeout_msecs": INTROSPECTION_TIMEOUT_MSECS,
                "script": self.script, "config": self.conf, "log": self.log}

    def write_config(self):
        make_dir(self.conf_dir, 0o755)
        clients = {client_id: {key: value for key, value in client.items()
                               if key not in ("client_id", "public")}
                   for client_id, client in self.clients().items()}
        cfg = {"host": HOST, "port": IDP_PORT, "issuer": self.issuer,
               "cert": self.cert, "key": self.key, "admin_secret_file": self.admin_secret_file,
               "clients": clients, "pidfile": self.pidfile(), "log": self.log, "user": "nobody"}
        changed = False
        for source in SOURCES:
            changed |= write_file(os.path.join(self.conf_dir, source.name), source.read_bytes(), 0o755)
        changed |= write_file(self.conf, json.dumps(cfg, indent=1, sort_keys=True) + "\n", 0o644)
        return changed

    def start(self):
        self.clear_stale_pidfile()
        self.spawn([Auxd.python(), self.script, self.conf])

    def reload(self):
        # new code or clients: a restart (the tokens are forgotten)
        self.restart()


class OAuthControl:
    """stack.oauth: the IdP's facts, and its knobs through the admin
    interface (one HTTPS request each, verified against the stack CA).
    Users are local parts ("probe") or addresses."""

    APP_CLIENT, OTHER_APP_CLIENT, REFRESH_CLIENT = APP_CLIENT, OTHER_APP_CLIENT, REFRESH_CLIENT
    PUBLIC_CLIENT, INTROSPECTION_CLIENT = PUBLIC_CLIENT, INTROSPECTION_CLIENT

    def __init__(self, service, timeout=30.0):
        self.service = service
        self.timeout = timeout
        self.token_url = service.token_url
        self.introspection_url = service.introspection_url
        self.issuer = service.issuer

    @property
    def ca(self):
        return self.service.stack.ca

    def clients(self):
        return self.service.clients()

    def client_secret(self, client_id):
        """The client's secret (None for a public client)."""
        return self.service.secret(client_id)

    def client_secret_file(self, client_id):
        return self.service.secret_file(client_id)

    def admin(self, action, **args):
        """POST /admin/<action> with args as JSON; the IdP's JSON answer.
        StackError when the IdP refuses (the message says why)."""
        with open(self.service.admin_secret_file) as fh:
            secret = fh.read().strip()
        context = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection(HOST, IDP_PORT, context=context, timeout=self.timeout)
        try:
            conn.request("POST", f"/admin/{action}", body=json.dumps(args),
                         headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise StackError(f"IdP admin {action}: {exc}") from exc
        finally:
            conn.close()
        answer = json.loads(body) if body else {}
        if response.status != 200:
            raise StackError(f"IdP admin {action}: {response.status} {answer.get('error', body)}")
        return answer

    # -- tokens -----------------------------------------------------------------
    def issue_token(self, user, lifetime=3600, scope=None, length=None):
        """A fresh access token (str) for user, valid for `lifetime` s (<= 0:
        expired already); scope: str or list (default "imap smtp"); length:
        the token's length in characters (default 43)."""
        return self.admin("issue-token", user=oauth_user(user), lifetime=lifetime, scope=scope,
                          length=length)["access_token"]

    def issue_refresh_token(self, user, client_id=REFRESH_CLIENT, scope=None, lifetime=None):
        """A first refresh token (str) for user and a refresh_token client
        (REFRESH_CLIENT or PUBLIC_CLIENT), as a consent flow would hand out;
        lifetime None: it never expires."""
        return self.admin("issue-refresh-token", user=oauth_user(user), client_id=client_id,
                          scope=scope, lifetime=lifetime)["refresh_token"]

    def revoke_token(self, token):
        """Revoke an access token; True when the IdP knew it."""
        return self.admin("revoke-token", token=token)["revoked"]

    def revoke_refresh_token(self, token):
        """Revoke a refresh token (the next refresh with it: invalid_grant);
        True when the IdP knew it."""
        return self.admin("revoke-refresh-token", refresh_token=token)["revoked"]

    def token_state(self, token):
        """{"kind": "access" | "refresh" | None, "state": "active" | "expired" |
        "revoked" | "used" | "unknown", "user", "client_id", "scope", ...}."""
        return self.admin("token-state", token=token)

    # -- knobs --------------------------------------------------------------------
    def set_token_endpoint(self, delay=0.0, status=None, body="", content_type="application/json",
                           times=None):
        """/token from now on: answers after `delay` s; with `status` and
        `body` (str, or an object sent as JSON) instead of the real answer
        when status is given; for the next `times` requests only, or until
        changed (None).  No arguments: back to normal.  Returns the setting."""
        return self.admin("endpoint", endpoint="token", delay=delay, status=status, body=body,
                          content_type=content_type, times=times)

    def set_introspection_endpoint(self, delay=0.0, status=None, body="", content_type="application/json",
                                   times=None):
        """The same for /introspect (what Dovecot asks at each token login)."""
        return self.admin("endpoint", endpoint="introspect", delay=delay, status=status, body=body,
                          content_type=content_type, times=times)

    def set_expires_in(self, client_id, seconds=None):
        """expires_in of the client's access tokens from /token (None: back
        to DEFAULT_EXPIRES_IN).  Returns the client's settings."""
        return self.admin("client", client_id=client_id, expires_in=seconds)

    def reset(self):
        """Counters to zero, both endpoints normal, every client's
        expires_in as configured.  Tokens stay valid."""
        self.admin("reset")

    def reset_counters(self):
        self.admin("reset-counters")

    # -- what happened -------------------------------------------------------------
    def state(self):
        """{"counters", "endpoints", "requests", "clients"}: the IdP's state."""
        return self.admin("state")

    def token_requests(self):
        """/token requests since the last reset: {grant_type: n, ..., "total": n}
        (failed and faulted ones included; "(none)": no grant_type)."""
        counts = self.state()["counters"]["token"]
        return dict(counts, total=counts.get("total", 0))

    def introspection_requests(self):
        """/introspect requests since the last reset (one per token login)."""
        return self.state()["counters"]["introspect"].get("total", 0)

    def request_log(self):
        """The last requests to /token and /introspect, oldest first: endpoint,
        grant_type, client_id, client_auth ("basic", "body", "none"), scope,
        status, error, fault, at (epoch s); tokens by fingerprint only."""
        return self.state()["requests"]
