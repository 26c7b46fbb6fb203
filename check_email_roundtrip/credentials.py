"""How the probe signs in: a user, a credential and a mechanism, for both protocols.

A :class:`Login` is a user name, a credential and the SASL mechanism that
presents it.  The credential is a :class:`Password`, or an :class:`OAuth2`
whose access token comes from a token source at run time (``oauth.py``).
Adding a sign-in mechanism is one member of :class:`Mechanism` and one entry
in each protocol's table of mechanisms (``smtp.SIGN_IN``, ``imap.SIGN_IN``).

Secrets never print themselves: ``repr``/``str`` show a placeholder.  Every
secret text, in every form it travels in, is registered with the output
filter (``output.register_secret``), including tokens obtained at run time.
"""

from __future__ import annotations

import enum

from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Union


class Secret:
    """A secret text that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Mechanism(enum.Enum):
    """How a login proves itself (--smtp-auth, --imap-auth)."""

    PASSWORD = "password"  # SMTP AUTH PLAIN/LOGIN (smtplib's choice), IMAP LOGIN
    XOAUTH2 = "xoauth2"  # Google's and Microsoft's OAuth2 mechanism
    OAUTHBEARER = "oauthbearer"  # RFC 7628

    @property
    def is_oauth(self) -> bool:
        return self is not Mechanism.PASSWORD

    def __str__(self) -> str:
        return self.value


class Password(Record):
    secret: Secret
    source: str  # where it came from, for -vv: "file /etc/...", "$VARIABLE"

    def describe(self) -> str:
        return f"password from {self.source}"


# -- where an OAuth2 access token comes from ---------------------------------------------------
class StaticToken(Record):
    """A token refreshed by something else: read from a file or the environment."""

    secret: Secret
    source: str

    def describe(self) -> str:
        return f"access token from {self.source}"


class TokenCommand(Record):
    """A command that prints a fresh token on its first line (run without a shell)."""

    argv: tuple[str, ...]

    def describe(self) -> str:
        import shlex

        return f"access token from the command {shlex.join(self.argv)}"


class TokenEndpoint(Record):
    """The built-in grant: client credentials, or refresh token when one is given."""

    url: str
    client_id: str
    client_secret: Secret
    client_secret_source: str
    scope: str | None
    refresh_token_file: str | None
    cache_file: str  # the cached access token, 0600, in the state directory

    @property
    def grant(self) -> str:
        return "refresh_token" if self.refresh_token_file else "client_credentials"

    def describe(self) -> str:
        return (
            f"access token from {self.url} ({self.grant} grant, client {self.client_id}, secret from "
            f"{self.client_secret_source}, scope {self.scope or '(none)'}, cache {self.cache_file})"
        )


if TYPE_CHECKING:
    TokenSource = Union[StaticToken, TokenCommand, TokenEndpoint]


class OAuth2(Record):
    source: TokenSource

    def describe(self) -> str:
        return self.source.describe()


if TYPE_CHECKING:
    Credential = Union[Password, OAuth2]


class Login(Record):
    user: str
    credential: Credential
    mechanism: Mechanism = Mechanism.PASSWORD

    def secret_forms(self) -> tuple[str, ...]:
        """Every text known now that would give a secret away, as it may appear
        (a token obtained at run time is registered when it is obtained)."""
        credential = self.credential
        if isinstance(credential, Password):
            password = credential.secret.reveal()
            return (password, _b64(password), _b64(f"\0{self.user}\0{password}"))
        source = credential.source
        if isinstance(source, StaticToken):
            return token_forms(source.secret.reveal())
        if isinstance(source, TokenEndpoint):
            return (source.client_secret.reveal(),)
        return ()

    def describe(self) -> str:
        return f"{self.user} ({self.mechanism}, {self.credential.describe()})"


def token_forms(token: str) -> tuple[str, ...]:
    """A token as typed; its SASL initial responses are masked by the trace."""
    return (token,)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode("utf-8")).decode("ascii")
