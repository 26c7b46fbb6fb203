"""How the CLI turns options and the environment into logins.

A password or a token comes from a file (its first line) or an environment
variable, never the command line (``ps`` shows it).  Files are read as
regular files only, up to a size no secret needs, so that a FIFO or
``/dev/zero`` given by mistake cannot stall or swamp a run; a UTF-8 byte
order mark (Windows editors) is dropped.  An access token comes from the
first source that is set: ``--oauth-token-file``, ``$CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN``,
``--oauth-token-command``, the built-in grant (``--oauth-token-url`` or
``--oauth-provider``).
"""

from __future__ import annotations

import argparse
import os

from .credentials import Login, Mechanism, OAuth2, Password, Secret, StaticToken, TokenCommand, TokenEndpoint
from .files import read_private
from .options import OAUTH_CLIENT_SECRET_ENV, OAUTH_TOKEN_ENV, UsageError
from .providers import SCOPES, TOKEN_URLS, Provider

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from .credentials import TokenSource

SECRET_FILE_LIMIT = 64 * 1024


def read_secret_file(path: str, what: str, warnings: list[str]) -> str:
    """The first line of a secret file, or UsageError saying what is wrong."""
    try:
        if os.stat(path).st_mode & 0o004:
            # accepted, but said on every run until it is fixed
            warnings.append(f"{what} file {path} is readable by every user (chmod o-r)")
        raw = read_private(path, SECRET_FILE_LIMIT, follow_links=True)
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if raw is None:
        raise UsageError(f"cannot read {what} file {path}: No such file or directory")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise UsageError(f"{what} file {path} is not UTF-8 text") from None
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if not first_line:
        raise UsageError(f"{what} file {path} is empty")
    return first_line


def read_password(path: str | None, env_name: str, what: str, warnings: list[str]) -> Password | None:
    """The first line of ``path``, else the environment variable, else None."""
    if path:
        return Password(Secret(read_secret_file(path, f"{what} password", warnings)), f"file {path}")
    value = os.environ.get(env_name)
    return Password(Secret(value), f"${env_name}") if value else None


def login_for(
    option: str,
    user: str,
    mechanism: Mechanism,
    token: TokenSource | None,
    password: Password | None,
    password_help: str,
) -> Login:
    """A login with its credential: the access token's source for an OAuth2
    mechanism, else the password."""
    if mechanism.is_oauth:
        if token is None:
            raise UsageError(
                f"--{option}-auth {mechanism} needs an access token: --oauth-token-file, "
                f"${OAUTH_TOKEN_ENV}, --oauth-token-command, or --oauth-token-url/--oauth-provider"
            )
        return Login(user, OAuth2(token), mechanism)
    if password is None:
        raise UsageError(f"--{option}-user needs a password: {password_help}")
    return Login(user, password, mechanism)


# -- access tokens ------------------------------------------------------------------------------
def token_source(args: argparse.Namespace, state_dir: str, warnings: list[str]) -> TokenSource | None:
    """The first access-token source that is set, or None."""
    if args.oauth_token_file:
        token = read_secret_file(args.oauth_token_file, "OAuth token", warnings)
        return StaticToken(Secret(token), f"file {args.oauth_token_file}")
    if os.environ.get(OAUTH_TOKEN_ENV):
        return StaticToken(Secret(os.environ[OAUTH_TOKEN_ENV].strip()), f"${OAUTH_TOKEN_ENV}")
    if args.oauth_token_command:
        import shlex

        try:
            argv = tuple(shlex.split(args.oauth_token_command))
        except ValueError as exc:
            raise UsageError(f"--oauth-token-command does not split into words: {exc}") from None
        if not argv:
            raise UsageError("--oauth-token-command is empty")
        return TokenCommand(argv)
    if args.oauth_token_url or args.oauth_provider:
        return _token_endpoint(args, state_dir, warnings)
    return None


def _token_endpoint(args: argparse.Namespace, state_dir: str, warnings: list[str]) -> TokenEndpoint:
    import hashlib
    from urllib.parse import urlsplit

    provider: Provider | None = args.oauth_provider
    url = args.oauth_token_url
    if url is None and provider is not None:
        if provider is Provider.MICROSOFT and not args.oauth_tenant:
            raise UsageError("--oauth-provider microsoft needs --oauth-tenant (the tenant id or domain)")
        url = TOKEN_URLS[provider].format(tenant=args.oauth_tenant)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(
            f"--oauth-token-url must be an https:// URL (a client secret is never sent in clear): {url!r}"
        )
    if not args.oauth_client_id:
        raise UsageError("the token endpoint needs --oauth-client-id")
    if args.oauth_client_secret_file:
        secret = read_secret_file(args.oauth_client_secret_file, "OAuth client secret", warnings)
        secret_source = f"file {args.oauth_client_secret_file}"
    elif os.environ.get(OAUTH_CLIENT_SECRET_ENV):
        secret, secret_source = os.environ[OAUTH_CLIENT_SECRET_ENV].strip(), f"${OAUTH_CLIENT_SECRET_ENV}"
    else:
        raise UsageError(
            f"the token endpoint needs a client secret: --oauth-client-secret-file or "
            f"${OAUTH_CLIENT_SECRET_ENV}"
        )
    refresh_file = args.oauth_refresh_token_file
    if refresh_file:
        if os.path.islink(refresh_file):
            # it is rewritten at every rotation, by renaming a new file into
            # place: never through a link (files.py), so the link would be
            # replaced and its target keep a refresh token that no longer works
            raise UsageError(
                f"--oauth-refresh-token-file {refresh_file} is a symbolic link: give the file itself "
                "(a rotated refresh token is written in its place)"
            )
        read_secret_file(refresh_file, "OAuth refresh token", warnings)  # there and readable now
    scope = args.oauth_scope
    if scope is None and provider is not None:
        app_scope, delegated_scope = SCOPES[provider]
        if not refresh_file and app_scope is None:
            raise UsageError(
                f"--oauth-provider {provider} needs --oauth-refresh-token-file "
                "(it has no client-credentials access to mail)"
            )
        scope = delegated_scope if refresh_file else app_scope
    key = "\n".join(
        (url, args.oauth_client_id, scope or "", os.path.abspath(refresh_file) if refresh_file else "")
    )
    cache = os.path.join(state_dir, f"oauth-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json")
    return TokenEndpoint(url, args.oauth_client_id, Secret(secret), secret_source, scope, refresh_file, cache)
