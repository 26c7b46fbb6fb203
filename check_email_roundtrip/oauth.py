"""OAuth2 access tokens at run time: from a command, or from a token endpoint.

A file or an environment variable is read by the CLI (a token refreshed by
something else).  Here:

- :class:`TokenCommand`: run without a shell, inside the ``-t`` budget; its
  first line of stdout is the token.  A failure (exit code, stderr's last
  line, no output, too slow) is a :class:`~.errors.LocalError`: UNKNOWN.
- :class:`TokenEndpoint`: the client-credentials grant (Microsoft 365
  app-only access), or the refresh-token grant when a refresh token file is
  given (delegated access; Google).  The access token is cached (0600, in
  the state directory) and reused until shortly before it expires: a run
  with a good cached token makes no request.  The cache is read, the
  request made and a rotated refresh token written back under one lock, so
  that two runs that overlap neither both spend a refresh token (the second
  would get ``invalid_grant`` from a provider that rotates them) nor lose
  the new one.  Files are replaced atomically; the refresh token file keeps
  its owner and mode.

HTTPS goes through ``http.client`` on the run's TLS client, always verified
(``--insecure`` is for the mail servers; a client secret is never sent to an
endpoint whose certificate was not checked), honouring ``--ca-file``.  An
endpoint's RFC 6749 error is a ProbeError of the ``OAuth token request``
phase with ``error`` and ``error_description`` in the endpoint's words.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .credentials import Login, Password, Secret, StaticToken, TokenCommand, TokenEndpoint
from .deadline import Deadline
from .errors import LocalError, Phase, ProbeError
from .files import FileLock, read_private, write_private
from .mask import register_secret
from .net import connect_tcp, connection_error
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

    from .credentials import TokenSource
    from .session import Reach

# Largest answer read from a token endpoint or a token command.
MAX_RESPONSE = 64 * 1024
# What RFC 6749's error codes mean for the admin who reads the line.
ERROR_HINTS = {
    "invalid_grant": "the refresh token was revoked or has expired: sign in again for a new one",
    "invalid_client": "the client id or secret is wrong, or the secret has expired",
    "unauthorized_client": "this client may not use this grant: check the app registration",
    "invalid_scope": "the scope is not granted to this client",
    "consent_required": "an administrator must grant consent again",
    "interaction_required": "a person must sign in again",
}


class Obtained(Record):
    token: Secret
    requested: float | None  # seconds spent asking the endpoint or the command; None: from the cache


def obtain(source: TokenSource, reach: Reach) -> Obtained:
    """The access token of ``source`` for this run."""
    if isinstance(source, StaticToken):
        return Obtained(source.secret, None)
    reach.deadline.enter(Phase.OAUTH_TOKEN)
    if isinstance(source, TokenCommand):
        return _from_command(source, reach.deadline)
    return _from_endpoint(source, reach)


# -- a command -------------------------------------------------------------------------------
def _from_command(source: TokenCommand, deadline: Deadline) -> Obtained:
    import subprocess

    name = os.path.basename(source.argv[0])
    timeout = deadline.socket_timeout()
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(source.argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise LocalError(Phase.OAUTH_TOKEN, f"token command {source.argv[0]} not found") from None
    except PermissionError:
        raise LocalError(Phase.OAUTH_TOKEN, f"token command {source.argv[0]} is not executable") from None
    except subprocess.TimeoutExpired:
        raise LocalError(
            Phase.OAUTH_TOKEN, f"token command {name} did not finish within {timeout:.1f} s"
        ) from None
    except OSError as exc:
        raise LocalError(Phase.OAUTH_TOKEN, f"token command {name} cannot run: {exc.strerror}") from None
    stderr = done.stderr[-MAX_RESPONSE:].decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0:
        last = f": {stderr[-1]}" if stderr else ""
        raise LocalError(
            Phase.OAUTH_TOKEN, f"token command {name} failed with exit code {done.returncode}{last}"
        )
    lines = done.stdout[:MAX_RESPONSE].decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise LocalError(Phase.OAUTH_TOKEN, f"token command {name} printed no token")
    register_secret(token)
    return Obtained(Secret(token), time.monotonic() - started)


# -- a token endpoint -----------------------------------------------------------------------------
def _from_endpoint(source: TokenEndpoint, reach: Reach) -> Obtained:
    with _cache_lock(source.cache_file, reach.deadline):
        cached = _cached(source.cache_file)
        if cached is not None:
            register_secret(cached)
            return Obtained(Secret(cached), None)
        started = time.monotonic()
        form = {
            "grant_type": source.grant,
            "client_id": source.client_id,
            "client_secret": source.client_secret.reveal(),
        }
        if source.scope:
            form["scope"] = source.scope
        refresh_token = None
        if source.refresh_token_file:
            refresh_token = _read_refresh_token(source.refresh_token_file)
            form["refresh_token"] = refresh_token
        answer = _post(source.url, form, reach)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProbeError(
                Phase.OAUTH_TOKEN, f"failed: {_host(source.url)} answered without an access_token"
            )
        register_secret(token)
        new_refresh = answer.get("refresh_token")
        if (
            source.refresh_token_file
            and isinstance(new_refresh, str)
            and new_refresh
            and new_refresh != refresh_token
        ):
            register_secret(new_refresh)
            _write_refresh_token(source.refresh_token_file, new_refresh)
        lifetime = _number(answer.get("expires_in"), 3600.0)
        entry = {"access_token": token, "expires_at": time.time() + lifetime, "lifetime": lifetime}
        try:
            write_private(source.cache_file, json.dumps(entry).encode())
        except OSError as exc:
            raise LocalError(
                Phase.OAUTH_TOKEN, f"the token cache {source.cache_file} cannot be written: {exc.strerror}"
            ) from None
        return Obtained(Secret(token), time.monotonic() - started)


@contextmanager
def _cache_lock(cache_file: str, deadline: Deadline) -> Iterator[None]:
    """The cache's lock, held while the cache is read, the request made and
    the answer kept.  A lock another run holds past the step, or a state
    directory we cannot use, is our side's problem: LocalError naming it."""
    lock = FileLock(cache_file + ".lock", deadline)
    try:
        lock.__enter__()
    except OSError as exc:
        raise LocalError(Phase.OAUTH_TOKEN, f"the token cache {cache_file}: {exc.strerror}") from None
    try:
        yield
    finally:
        lock.__exit__()


def _cached(path: str) -> str | None:
    """The cached token while it is good: until a tenth of its lifetime (at most
    a minute) before it expires, so it does not run out while we sign in."""
    try:
        raw = read_private(path, MAX_RESPONSE)
    except OSError:  # not a file of ours (a link, too big): no cache; the next write replaces it
        return None
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        token, expires_at = entry["access_token"], float(entry["expires_at"])
        margin = min(60.0, float(entry.get("lifetime", 600.0)) / 10)
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(token, str) or not token or expires_at - margin <= time.time():
        return None
    return token


def _read_refresh_token(path: str) -> str:
    try:
        raw = read_private(path, MAX_RESPONSE)
    except OSError as exc:  # a link, not a regular file: never read or rewritten through it
        raise LocalError(
            Phase.OAUTH_TOKEN, f"refresh token file {path} cannot be read: {exc.strerror}"
        ) from None
    if raw is None:
        raise LocalError(Phase.OAUTH_TOKEN, f"refresh token file {path} cannot be read")
    lines = raw.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise LocalError(Phase.OAUTH_TOKEN, f"refresh token file {path} is empty")
    register_secret(token)
    return token


def _write_refresh_token(path: str, token: str) -> None:
    try:
        info = os.stat(path)
        write_private(
            path, (token + "\n").encode(), mode=info.st_mode & 0o7777, owner=(info.st_uid, info.st_gid)
        )
    except OSError as exc:
        raise LocalError(
            Phase.OAUTH_TOKEN,
            f"the new refresh token cannot be saved to {path}: {exc.strerror} "
            "(the old one no longer works: sign in again)",
        ) from None


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if 0 < number < 10 * 365 * 86400 else default


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc


def _post(url: str, form: dict[str, str], reach: Reach) -> dict[str, Any]:
    """POST the form; the JSON answer, or ProbeError with the endpoint's words."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = reach.deadline.socket_timeout()
    tls, family = reach.tls, reach.family

    class Connection(http.client.HTTPConnection):
        """HTTP over the run's own connect (bounded resolve, -4/-6) and the
        one handshake site: verified always, whatever --insecure says."""

        default_port = 443

        def connect(self) -> None:
            def certificate() -> bytes | None:  # to say why it was refused
                return tls.peek_certificate(connect_tcp(host, port, timeout, Phase.OAUTH_TOKEN, family), host)

            sock = connect_tcp(host, port, timeout, Phase.OAUTH_TOKEN, family)
            self.sock = tls.handshake(
                sock, "HTTPS", host, port, Phase.OAUTH_TOKEN, verify=True, diagnose=certificate
            )

    connection = Connection(host, port, timeout=timeout)
    try:
        connection.request(
            "POST",
            path,
            body=urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "check_email_roundtrip",
            },
        )
        response = connection.getresponse()
        body = response.read(MAX_RESPONSE + 1)
        status = response.status
    except ProbeError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError):
            raise connection_error(Phase.OAUTH_TOKEN, host, port, exc, timeout) from None
        raise ProbeError(
            Phase.OAUTH_TOKEN, f"to {host}:{port} failed: {exc.__class__.__name__} {exc}"
        ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(body[:MAX_RESPONSE]) if len(body) <= MAX_RESPONSE else None
    except ValueError:
        answer = None
    if 200 <= status < 300 and isinstance(answer, dict):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        error = answer["error"]
        description = answer.get("error_description")
        words = f"{error}" + (f": {description}" if isinstance(description, str) and description else "")
        hint = ERROR_HINTS.get(error)
        raise ProbeError(
            Phase.OAUTH_TOKEN, f"rejected by {host}" + (f" ({hint})" if hint else ""), status, words
        )
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    raise ProbeError(Phase.OAUTH_TOKEN, f"failed: {host} answered HTTP {status}", server_text=text)


class Keyring:
    """The secret each login presents in this run: a password as it is, an
    access token obtained once per token source (SMTP and IMAP share it)."""

    def __init__(self, reach: Reach):
        self.reach = reach
        self._tokens: dict[TokenSource, Secret | ProbeError | LocalError] = {}
        # SMTP and IMAP sign in at the same time: one request for both, and
        # a failed one is not asked again by the other
        self._lock = threading.Lock()
        self.requested: float | None = None  # seconds spent getting tokens, when any request was made

    def secret(self, login: Login) -> Secret:
        credential = login.credential
        if isinstance(credential, Password):
            return credential.secret
        source = credential.source
        with self._lock:
            if source not in self._tokens:
                try:
                    obtained = obtain(source, self.reach)
                except (ProbeError, LocalError) as exc:
                    self._tokens[source] = exc
                    raise
                if obtained.requested is not None:
                    self.requested = (self.requested or 0.0) + obtained.requested
                self._tokens[source] = obtained.token
            known = self._tokens[source]
        if isinstance(known, (ProbeError, LocalError)):
            raise known
        return known
