"""The OAuth2 providers the plugin knows by name: token URLs and default scopes.

From the providers' documentation (see the README's Microsoft 365 and Google
sections for the registration steps):

- Microsoft identity platform: ``https://login.microsoftonline.com/<tenant>/
  oauth2/v2.0/token``.  App-only access (client credentials, the usual
  choice for a monitoring probe) asks for ``https://outlook.office365.com/
  .default`` and needs the IMAP.AccessAsApp and SMTP.SendAsApp application
  permissions; delegated access (a refresh token) asks for IMAP and SMTP
  scopes and ``offline_access``.
- Google: ``https://oauth2.googleapis.com/token``, scope
  ``https://mail.google.com/``, with a refresh token from a one-time consent.
"""

from __future__ import annotations

import enum


class Provider(enum.Enum):
    MICROSOFT = "microsoft"
    GOOGLE = "google"

    def __str__(self) -> str:
        return self.value


TOKEN_URLS = {
    Provider.MICROSOFT: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
    Provider.GOOGLE: "https://oauth2.googleapis.com/token",
}
# (client credentials scope or None when the provider has no such grant for
# mail, refresh token scope)
SCOPES: dict[Provider, tuple[str | None, str]] = {
    Provider.MICROSOFT: (
        "https://outlook.office365.com/.default",
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send "
        "offline_access",
    ),
    Provider.GOOGLE: (None, "https://mail.google.com/"),
}
