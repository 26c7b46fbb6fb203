"""How the probe signs in: a user and a credential, handed to both protocols.

A :class:`Login` is a user name and a credential.  Today the credential is a
:class:`Password`; a sign-in mechanism that needs something else (an OAuth2
access token from a token source) is one more credential type here and one
more entry in each protocol's table of mechanisms (``smtp.SIGN_IN``,
``imap.SIGN_IN``), nothing else.

Secrets never print themselves: ``repr``/``str`` show a placeholder, and
:meth:`Login.secret_forms` lists every form in which the secret travels (as
typed, and the base64 forms of AUTH PLAIN and LOGIN) for the output filter.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field


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
    """How a login proves itself: each protocol has one entry per member."""

    PASSWORD = "password"  # SMTP AUTH PLAIN/LOGIN (smtplib's choice), IMAP LOGIN

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Password:
    secret: Secret = field(repr=False)
    source: str  # where it came from, for -vv: "file /etc/...", "$VARIABLE"

    mechanism = Mechanism.PASSWORD

    def describe(self) -> str:
        return f"password from {self.source}"


Credential = Password


@dataclass(frozen=True)
class Login:
    user: str
    credential: Credential

    @property
    def mechanism(self) -> Mechanism:
        return self.credential.mechanism

    def secret_forms(self) -> tuple[str, ...]:
        """Every text that would give the secret away, as it may appear."""
        password = self.credential.secret.reveal()
        return (password, _b64(password), _b64(f"\0{self.user}\0{password}"))

    def describe(self) -> str:
        return f"{self.user} ({self.credential.describe()})"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
