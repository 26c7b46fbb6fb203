"""Option parsing and defaults: pure, in-process."""

import pytest

from check_email_roundtrip.cli import UsageError, parse_settings
from check_email_roundtrip.settings import Mode, Security

BASE = ["-H", "mail.example.test", "--smtp-user", "probe@example.test"]
ENV = {"CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD": "s3cret"}


@pytest.fixture(autouse=True)
def password_env(monkeypatch):
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD", raising=False)
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD", "s3cret")


def test_defaults_follow_the_issue():
    settings = parse_settings(BASE)
    assert settings.mode is Mode.ROUNDTRIP
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == (
        "mail.example.test",
        587,
        Security.STARTTLS,
    )
    assert (settings.imap.host, settings.imap.port, settings.imap.security) == (
        "mail.example.test",
        993,
        Security.TLS,
    )
    assert settings.envelope_from == settings.recipient == "probe@example.test"
    assert settings.imap.user == "probe@example.test"
    assert settings.imap.login.credential.secret.reveal() == "s3cret"  # same user: same password
    assert settings.imap_folder == "INBOX"
    assert str(settings.thresholds.warning) == "60" and str(settings.thresholds.critical) == "300"
    assert settings.wait == 305  # just past the critical threshold
    assert settings.timeout == 335 and settings.timeout > settings.wait
    assert not settings.tls.insecure


@pytest.mark.parametrize(
    "args, port, security",
    [
        (["--smtp-port", "465"], 465, Security.TLS),
        (["--smtp-port", "587"], 587, Security.STARTTLS),
        (["--smtp-port", "25"], 25, Security.STARTTLS),
        (["--smtp-security", "tls"], 465, Security.TLS),
        (["--smtp-security", "none"], 25, Security.NONE),
        (["--smtp-port", "2525", "--smtp-security", "tls"], 2525, Security.TLS),
    ],
)
def test_smtp_security_follows_the_port(args, port, security):
    settings = parse_settings(BASE + args)
    assert (settings.smtp.port, settings.smtp.security) == (port, security)


@pytest.mark.parametrize(
    "args, port, security",
    [
        (["--imap-port", "993"], 993, Security.TLS),
        (["--imap-port", "143"], 143, Security.STARTTLS),
        (["--imap-security", "starttls"], 143, Security.STARTTLS),
        (["--imap-port", "10993"], 10993, Security.TLS),
    ],
)
def test_imap_security_follows_the_port(args, port, security):
    settings = parse_settings(BASE + args)
    assert (settings.imap.port, settings.imap.security) == (port, security)


def test_host_overrides():
    settings = parse_settings(BASE + ["--smtp-host", "smtp.example.test", "--imap-host", "imap.example.test"])
    assert settings.smtp.host == "smtp.example.test" and settings.imap.host == "imap.example.test"


def test_wait_follows_critical_and_timeout_follows_wait():
    settings = parse_settings(BASE + ["-w", "5", "-c", "20"])
    assert settings.wait == 25 and settings.timeout == 55
    settings = parse_settings(BASE + ["--wait", "10", "-t", "12"])
    assert settings.wait == 10 and settings.timeout == 12


def test_phase_thresholds_have_budgets_and_can_be_changed():
    settings = parse_settings(BASE)
    budgets = {label: str(pair[0]) for label, pair in settings.thresholds.phases.items()}
    assert budgets == {
        "smtp_connect": "2",
        "smtp_starttls": "2",
        "smtp_auth": "1",
        "smtp_submit": "3",
        "imap_retrieval": "3",
    }
    settings = parse_settings(BASE + ["--phase-warning", "smtp_auth=0.5", "--phase-critical", "smtp_auth=5"])
    assert [str(r) for r in settings.thresholds.phases["smtp_auth"]] == ["0.5", "5"]


def test_password_file_first_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD")
    path = tmp_path / "pw"
    path.write_text("from-file\nignored\n")
    settings = parse_settings(BASE + ["--smtp-password-file", str(path)])
    assert settings.smtp.login.credential.secret.reveal() == "from-file"
    assert "from-file" not in repr(settings)


def test_imap_password_from_its_own_variable(monkeypatch):
    monkeypatch.setenv("CHECK_EMAIL_ROUNDTRIP_IMAP_PASSWORD", "imap-pw")
    settings = parse_settings(BASE + ["--imap-user", "reader@example.test"])
    assert settings.imap.login.credential.secret.reveal() == "imap-pw"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no SMTP server"),
        (["-H", "x", "--smtp-user", "nobody"], "no sender"),
        (["-H", "x", "--from", "a@b"], "needs an IMAP login"),
        (BASE + ["--smtp-port", "0"], "port out of range"),
        (BASE + ["-w", "a:b"], "invalid range"),
        (BASE + ["--wait", "-1"], "positive number"),
        (BASE + ["--phase-warning", "bogus=1"], "LABEL=RANGE"),
        (BASE + ["--smtp-security", "ssl"], "invalid choice"),
        (BASE + ["--smtp-password-file", "/nonexistent/pw"], "cannot read SMTP password file"),
        (BASE + ["positional"], "unrecognized arguments"),
        (
            BASE + ["--ca-file", "/nonexistent/ca.pem"],
            "cannot use --ca-file /nonexistent/ca.pem: No such file",
        ),
        (BASE + ["--ca-file", __file__], "cannot use --ca-file .*: no usable certificate in it"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        parse_settings(args)


def test_user_without_password_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD")
    with pytest.raises(UsageError, match="needs a password"):
        parse_settings(BASE)


def test_world_readable_password_file_is_accepted_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD")
    path = tmp_path / "pw"
    path.write_text("pw\n")
    path.chmod(0o644)
    settings = parse_settings(BASE + ["--smtp-password-file", str(path)])
    assert settings.config_warnings == (f"SMTP password file {path} is readable by every user (chmod o-r)",)
    path.chmod(0o640)  # the nagios group may read it
    assert parse_settings(BASE + ["--smtp-password-file", str(path)]).config_warnings == ()
