"""OAuth2 sign-in without a server: the SASL messages, where a token comes
from, and the options' errors in the user's terms.  The protocol paths run
against the real stack in test_oauth_stack.py."""

import base64
import json
import os

import pytest

from check_email_roundtrip import sasl
from check_email_roundtrip.cli import UsageError, parse_settings
from check_email_roundtrip.credentials import Mechanism, StaticToken, TokenCommand, TokenEndpoint

BASE = ["-H", "mail.example.test", "--smtp-user", "probe@example.test"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in (
        "CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD",
        "CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD",
        "CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN",
        "CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def secret_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


# -- the wire formats ---------------------------------------------------------------------
def test_xoauth2_initial_response_is_googles_and_microsofts_format():
    text = sasl.initial_response(Mechanism.XOAUTH2, "probe@example.test", "tok", "mail.example.test", 993)
    assert text == "user=probe@example.test\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_initial_response_is_rfc_7628_with_an_escaped_saslname():
    text = sasl.initial_response(Mechanism.OAUTHBEARER, "a,b=c@example.test", "tok", "imap.example.test", 143)
    assert (
        text == "n,a=a=2Cb=3Dc@example.test,\x01host=imap.example.test\x01port=143\x01auth=Bearer tok\x01\x01"
    )


def test_failure_challenges_are_answered_as_each_mechanism_requires():
    assert sasl.failure_answer(Mechanism.XOAUTH2) == ""
    assert sasl.failure_answer(Mechanism.OAUTHBEARER) == "\x01"


def test_a_long_token_goes_after_the_334_not_on_the_auth_line():
    short = sasl.initial_response(Mechanism.XOAUTH2, "probe@example.test", "t" * 1000, "h", 587)
    long = sasl.initial_response(Mechanism.XOAUTH2, "probe@example.test", "t" * 1600, "h", 587)
    assert sasl.fits_on_auth_line(Mechanism.XOAUTH2, short)
    assert not sasl.fits_on_auth_line(Mechanism.XOAUTH2, long)  # Postfix: 2048 characters a line


@pytest.mark.parametrize(
    "challenge, words",
    [
        (
            b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}',
            "status 401, schemes bearer, scope https://mail.google.com/",
        ),
        (b'{"status":"invalid_token"}', "status invalid_token"),
        (base64.b64encode(b'{"status":"400"}'), "status 400"),  # encoded twice by an odd server
        (b"not json at all", "not json at all"),
    ],
)
def test_a_failure_challenge_is_put_in_words(challenge, words):
    assert sasl.describe_challenge(challenge) == words


# -- where the token comes from: the first source that is set wins ------------------------------
def test_token_file_then_environment_then_command_then_endpoint(tmp_path, monkeypatch):
    token_file = secret_file(tmp_path, "token", "from-file\n")
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN", "from-env")
    command = ["--oauth-token-command", "printf 'from command'"]
    endpoint = ["--oauth-token-url", "https://idp.example.test/token", "--oauth-client-id", "app"]
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET", "s3cret")

    def source(*extra):
        settings = parse_settings(BASE + ["--auth", "xoauth2", *extra])
        assert settings.smtp.login.mechanism is Mechanism.XOAUTH2
        assert settings.imap.login.credential == settings.smtp.login.credential  # one token for both
        return settings.smtp.login.credential.source

    first = source("--oauth-token-file", token_file, *command, *endpoint)
    assert isinstance(first, StaticToken) and first.secret.reveal() == "from-file"
    second = source(*command, *endpoint)
    assert isinstance(second, StaticToken) and second.secret.reveal() == "from-env"
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN")
    third = source(*command, *endpoint)
    assert isinstance(third, TokenCommand) and third.argv == ("printf", "from command")  # words, no shell
    fourth = source(*endpoint)
    assert isinstance(fourth, TokenEndpoint) and fourth.grant == "client_credentials"


def test_each_protocol_may_sign_in_its_own_way(monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "pw")
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN", "tok")
    settings = parse_settings(BASE + ["--imap-auth", "oauthbearer"])
    assert settings.smtp.login.mechanism is Mechanism.PASSWORD
    assert settings.imap.login.mechanism is Mechanism.OAUTHBEARER
    settings = parse_settings(BASE + ["--auth", "xoauth2", "--smtp-auth", "password"])
    assert (settings.smtp.login.mechanism, settings.imap.login.mechanism) == (
        Mechanism.PASSWORD,
        Mechanism.XOAUTH2,
    )


@pytest.mark.parametrize(
    "provider, extra, url, scope",
    [
        (
            "microsoft",
            ["--oauth-tenant", "contoso.onmicrosoft.com"],
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
            "https://outlook.office365.com/.default",
        ),
        (
            "google",
            ["--oauth-refresh-token-file", "REFRESH"],
            "https://oauth2.googleapis.com/token",
            "https://mail.google.com/",
        ),
    ],
)
def test_provider_fills_in_the_token_url_and_scope(tmp_path, monkeypatch, provider, extra, url, scope):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET", "s3cret")
    refresh = secret_file(tmp_path, "refresh", "rt\n")
    extra = [refresh if arg == "REFRESH" else arg for arg in extra]
    settings = parse_settings(
        BASE + ["--auth", "xoauth2", "--oauth-provider", provider, "--oauth-client-id", "app", *extra]
    )
    source = settings.smtp.login.credential.source
    assert (source.url, source.scope) == (url, scope)
    assert source.cache_file.startswith(str(tmp_path / "state" / "check_email_roundtrip" / "oauth-"))


def test_microsoft_delegated_scope_with_a_refresh_token(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET", "s3cret")
    settings = parse_settings(
        BASE
        + [
            "--auth",
            "xoauth2",
            "--oauth-provider",
            "microsoft",
            "--oauth-tenant",
            "t",
            "--oauth-client-id",
            "app",
            "--oauth-refresh-token-file",
            secret_file(tmp_path, "refresh", "rt\n"),
        ]
    )
    source = settings.smtp.login.credential.source
    assert source.grant == "refresh_token"
    assert "IMAP.AccessAsUser.All" in source.scope and "offline_access" in source.scope


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--auth", "xoauth2"], "--smtp-auth xoauth2 needs an access token: --oauth-token-file"),
        (
            [
                "--auth",
                "xoauth2",
                "--oauth-token-url",
                "http://idp.example.test/token",
                "--oauth-client-id",
                "a",
            ],
            "--oauth-token-url must be an https:// URL",
        ),
        (
            ["--auth", "xoauth2", "--oauth-token-url", "https://idp.example.test/token"],
            "needs --oauth-client-id",
        ),
        (
            [
                "--auth",
                "xoauth2",
                "--oauth-token-url",
                "https://idp.example.test/token",
                "--oauth-client-id",
                "a",
            ],
            "needs a client secret: --oauth-client-secret-file or $CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET",
        ),
        (
            ["--auth", "xoauth2", "--oauth-provider", "microsoft"],
            "--oauth-provider microsoft needs --oauth-tenant",
        ),
        (
            ["--auth", "xoauth2", "--oauth-token-file", "/nonexistent/token"],
            "cannot read OAuth token file /nonexistent/token: No such file or directory",
        ),
        (
            ["--auth", "xoauth2", "--oauth-token-command", "'unbalanced"],
            "--oauth-token-command does not split",
        ),
        (["--auth", "kerberos"], "invalid choice: 'kerberos'"),
    ],
)
def test_bad_oauth_options_are_usage_errors(extra, message):
    with pytest.raises(UsageError, match=message.replace("$", r"\$")):
        parse_settings(BASE + extra)


def test_google_without_a_refresh_token_says_why(monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET", "s3cret")
    with pytest.raises(UsageError, match="google needs --oauth-refresh-token-file"):
        parse_settings(BASE + ["--auth", "xoauth2", "--oauth-provider", "google", "--oauth-client-id", "a"])


def test_token_and_client_secret_are_masked_and_never_in_a_repr(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN", "the-access-token")
    settings = parse_settings(BASE + ["--auth", "xoauth2"])
    assert "the-access-token" not in repr(settings)
    assert "the-access-token" in settings.secrets()
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_TOKEN")
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_OAUTH_CLIENT_SECRET", "the-client-secret")
    settings = parse_settings(
        BASE
        + ["--auth", "xoauth2", "--oauth-token-url", "https://idp.example.test/t", "--oauth-client-id", "a"]
    )
    assert "the-client-secret" not in repr(settings) and "the-client-secret" in settings.secrets()


def test_token_cache_file_is_private_and_written_whole(tmp_path):
    from check_email_roundtrip.files import read_private, write_private

    path = tmp_path / "cache" / "oauth-x.json"
    write_private(str(path), json.dumps({"access_token": "t"}).encode())
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.unlink(path)
    os.symlink(victim, path)  # a link planted where the cache goes
    with pytest.raises(OSError, match="symbolic link"):
        read_private(str(path), 1024)
    write_private(str(path), b"new")
    assert victim.read_text() == "precious\n" and not path.is_symlink() and path.read_bytes() == b"new"
