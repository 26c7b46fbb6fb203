"""TLS health, with the installed plugin against the stack's real Postfix and
Dovecot presenting certificates the stack made for the purpose (one loopback
address per variant: tests/mailstack/certvariants.py), and the TLS-1.0-only
fronts.  A round trip to a variant's address speaks to both servers, so each
test sees the SMTP and the IMAP certificate; the first line names the SMTP
one (the first problem found), the details the IMAP one.
"""

import re
from datetime import datetime, timezone

import pytest
from conftest import assert_state, run_plugin
from mailstack import IMAPS_PORT, IMAPS_TLS10_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, SUBMISSIONS_TLS10_PORT

DATE = r"\d{4}-\d\d-\d\d"


def roundtrip_args(stack, variant, *extra, ca=True):
    """A round trip to the variant's address: implicit TLS on both sides."""
    args = [
        "-H", variant.host,
        "--smtp-port", str(SUBMISSIONS_PORT), "--smtp-security", "tls",
        "--imap-port", str(IMAPS_PORT), "--imap-security", "tls",
        "--smtp-user", stack.address("probe"), "--smtp-password-file", stack.password_file("probe"),
        "--no-state",
    ]  # fmt: skip
    if ca:
        args += ["--ca-file", variant.ca_file]
    return [*args, *extra]


def names(variant):
    """How the plugin names whom a certificate is for: SAN DNS names, then addresses."""
    dns = [name[4:] for name in variant.names if name.startswith("DNS:")]
    ips = [name[3:] for name in variant.names if name.startswith("IP:")]
    return ", ".join(dns + ips)


def expires_on(variant):
    return variant.not_after.strftime("%Y-%m-%d")


def assert_days_match_openssl(run, variant, labels=("smtp_cert_days", "imap_cert_days")):
    """Within a day of what openssl says the certificate's notAfter is."""
    days = (variant.not_after - datetime.now(timezone.utc)).total_seconds() / 86400
    for label in labels:
        assert abs(run.perfdata[label] - days) < 1, (label, run.perfdata[label], days, run.describe())


# -- expiry, judged by --cert-days ---------------------------------------------------------
def test_a_valid_certificate_is_ok_and_its_days_are_in_the_perfdata(stack):
    variant = stack.cert_variant("valid")
    run = run_plugin(*roundtrip_args(stack, variant))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert_days_match_openssl(run, variant)
    assert "smtp_cert_days=" in run.stdout and ";21:;7:" in run.stdout


def test_fourteen_days_left_is_warning_by_default_naming_server_names_and_date(stack):
    variant = stack.cert_variant("expires_in_14_days")
    run = run_plugin(*roundtrip_args(stack, variant))
    assert_state(
        run,
        1,
        "WARNING",
        f"EMAIL_ROUNDTRIP WARNING - SMTP certificate for {names(variant)} expires in 14 days "
        f"({expires_on(variant)})",
    )
    assert f"IMAP certificate for {names(variant)} expires in 14 days ({expires_on(variant)})" in run.lines
    assert_days_match_openssl(run, variant)


def test_five_days_left_is_warning_under_7_3_and_critical_under_the_default_21_7(stack):
    variant = stack.cert_variant("expires_in_5_days")
    line = f"SMTP certificate for {names(variant)} expires in 5 days ({expires_on(variant)})"
    run = run_plugin(*roundtrip_args(stack, variant, "--cert-days", "7,3"))
    assert_state(run, 1, "WARNING", f"EMAIL_ROUNDTRIP WARNING - {line}")
    assert_days_match_openssl(run, variant)
    assert ";7:;3:" in run.stdout
    run = run_plugin(*roundtrip_args(stack, variant))
    assert_state(run, 2, "CRITICAL", f"EMAIL_ROUNDTRIP CRITICAL - {line}")


def test_two_days_left_is_critical(stack):
    variant = stack.cert_variant("expires_in_2_days")
    run = run_plugin(*roundtrip_args(stack, variant, "--cert-days", "7,3"))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP certificate for {names(variant)} expires in 2 days "
        f"({expires_on(variant)})",
    )
    assert_days_match_openssl(run, variant)


def test_cert_days_0_reports_the_days_and_judges_nothing(stack):
    variant = stack.cert_variant("expires_in_2_days")
    run = run_plugin(*roundtrip_args(stack, variant, "--cert-days", "0"))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    assert_days_match_openssl(run, variant)
    # the days, with no thresholds after them
    assert re.search(r"\bsmtp_cert_days=[0-9.]+( |$)", run.stdout, re.M), run.describe()


def test_a_single_cert_days_value_warns_and_is_critical_only_once_expired(stack):
    variant = stack.cert_variant("expires_in_2_days")
    run = run_plugin(*roundtrip_args(stack, variant, "--cert-days", "3"))
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - SMTP certificate for ")


# -- a certificate refused, in words ----------------------------------------------------------------
def test_an_expired_certificate_is_critical_saying_expired_on(stack):
    variant = stack.cert_variant("expired_yesterday")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit"))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP TLS handshake to {variant.host}:{SUBMISSIONS_PORT}: "
        f"certificate for {names(variant)} expired on {variant.not_after:%Y-%m-%d %H:%M} UTC",
    )
    assert_days_match_openssl(run, variant, ("smtp_cert_days",))
    assert run.perfdata["smtp_cert_days"] < 0
    # the IMAP side the same (roundtrip mode signs in to IMAP first)
    run = run_plugin(*roundtrip_args(stack, variant))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"IMAP TLS handshake to {variant.host}:{IMAPS_PORT}: certificate for {names(variant)} expired on ",
    )


def test_an_expired_certificate_with_insecure_is_still_critical_by_its_days(stack):
    variant = stack.cert_variant("expired_yesterday")
    run = run_plugin(*roundtrip_args(stack, variant, "--insecure", ca=False))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP certificate for {names(variant)} expired on "
        f"{variant.not_after:%Y-%m-%d %H:%M} UTC, TLS NOT VERIFIED (--insecure)",
    )
    assert_days_match_openssl(run, variant)


def test_insecure_still_reads_and_judges_the_days(stack):
    variant = stack.cert_variant("expires_in_5_days")
    run = run_plugin(*roundtrip_args(stack, variant, "--insecure", "--cert-days", "7,3", ca=False))
    assert_state(
        run,
        1,
        "WARNING",
        f"EMAIL_ROUNDTRIP WARNING - SMTP certificate for {names(variant)} expires in 5 days",
    )
    assert run.first_line.split(" | ")[0].endswith("TLS NOT VERIFIED (--insecure)")
    assert_days_match_openssl(run, variant)


def test_a_certificate_not_yet_valid_is_critical_saying_from_when(stack):
    variant = stack.cert_variant("not_yet_valid")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit"))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP TLS handshake to {variant.host}:{SUBMISSIONS_PORT}: "
        f"certificate for {names(variant)} not yet valid: valid from {variant.not_before:%Y-%m-%d %H:%M} UTC",
    )


def test_a_certificate_for_another_name_says_whom_it_is_for(stack):
    variant = stack.cert_variant("wrong_name")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit"))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP TLS handshake to {variant.host}:{SUBMISSIONS_PORT}: "
        f"certificate is for mail.example.org, not {variant.host}",
    )
    # over STARTTLS the same words, from the same handshake site
    run = run_plugin(
        *roundtrip_args(stack, variant, "--mode", "submit", "--smtp-port", str(SUBMISSION_PORT)),
        "--smtp-security",
        "starttls",
    )
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP STARTTLS to {variant.host}:{SUBMISSION_PORT}: "
        f"certificate is for mail.example.org, not {variant.host}",
    )


def test_a_self_signed_certificate_says_so_and_is_trusted_with_its_own_file(stack):
    variant = stack.cert_variant("self_signed")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit", ca=False))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP TLS handshake to {variant.host}:{SUBMISSIONS_PORT}: "
        f"self-signed certificate (for {names(variant)}; trust it with --ca-file)",
    )
    run = run_plugin(*roundtrip_args(stack, variant))  # --ca-file: the certificate itself
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")


def test_an_unknown_issuer_is_named(stack):
    variant = stack.cert_variant("unknown_ca")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit", ca=False))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP TLS handshake to {variant.host}:{SUBMISSIONS_PORT}: "
        "unknown issuer: Mailstack Unknown Test CA (use --ca-file?)",
    )
    run = run_plugin(*roundtrip_args(stack, variant))  # --ca-file: that CA
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")


# -- protocol version, address family, -v ------------------------------------------------------------
def tls10_args(stack, *extra):
    variant = stack.cert_variant("tls10_only")
    return [
        "-H", variant.host, "--ca-file", variant.ca_file, "--no-state",
        "--smtp-port", str(SUBMISSIONS_TLS10_PORT), "--smtp-security", "tls",
        "--imap-port", str(IMAPS_TLS10_PORT), "--imap-security", "tls",
        # the SMTP front relays to the inbound MX: no AUTH there
        "--from", stack.address("probe"), "--to", stack.address("probe"),
        "--imap-user", stack.address("probe"), "--imap-password-file", stack.password_file("probe"),
        *extra,
    ]  # fmt: skip


def test_a_server_speaking_only_tls_1_0_is_a_warning_naming_it(stack):
    run = run_plugin(*tls10_args(stack, "--mode", "submit", "-v"))
    assert_state(
        run,
        1,
        "WARNING",
        f"EMAIL_ROUNDTRIP WARNING - SMTP server 127.0.0.1:{SUBMISSIONS_TLS10_PORT} negotiated TLSv1 "
        "(below --tls-min 1.2)",
    )
    assert any(
        line.startswith(f"SMTP 127.0.0.1:{SUBMISSIONS_TLS10_PORT} (127.0.0.1): TLSv1 ") for line in run.lines
    )
    assert run.perfdata["smtp_cert_days"] > 30  # the certificate is read there too


def test_both_servers_speaking_only_tls_1_0_are_both_named(stack):
    run = run_plugin(*tls10_args(stack))
    assert_state(
        run,
        1,
        "WARNING",
        f"EMAIL_ROUNDTRIP WARNING - SMTP server 127.0.0.1:{SUBMISSIONS_TLS10_PORT} negotiated",
    )
    assert f"IMAP server 127.0.0.1:{IMAPS_TLS10_PORT} negotiated TLSv1 (below --tls-min 1.2)" in run.lines
    assert run.perfdata["roundtrip"] > 0  # the probe still went round


def test_tls_min_1_3_warns_about_a_server_negotiating_1_2(stack):
    variant = stack.cert_variant("valid")
    # OpenSSL's default client offers 1.3; the stack's Postfix and Dovecot accept it: no warning
    run = run_plugin(*roundtrip_args(stack, variant, "--tls-min", "1.3", "--mode", "submit"))
    assert_state(run, 0, "OK")
    run = run_plugin(*tls10_args(stack, "--tls-min", "1.3", "--mode", "submit"))
    assert_state(run, 1, "WARNING", "negotiated TLSv1 (below --tls-min 1.3)")


def test_verbose_names_address_version_cipher_and_certificate_per_server(stack):
    variant = stack.cert_variant("valid")
    run = run_plugin(*roundtrip_args(stack, variant, "-v", "-4"))
    assert_state(run, 0, "OK")
    for protocol, port in (("SMTP", SUBMISSIONS_PORT), ("IMAP", IMAPS_PORT)):
        assert f"{protocol} {variant.host}:{port}: connected to {variant.host}" in run.lines
        line = next(
            line
            for line in run.lines
            if line.startswith(f"{protocol} {variant.host}:{port} ({variant.host}): ")
        )
        assert " TLSv1.3 TLS_" in line and f"certificate for {names(variant)} from Mailstack Test CA" in line
        assert line.endswith(", verified") and expires_on(variant) in line


@pytest.mark.parametrize("flag, family", [("-6", "IPv6"), ("--use-ipv6", "IPv6")])
def test_an_address_family_the_host_lacks_is_critical_saying_so(stack, flag, family):
    variant = stack.cert_variant("valid")
    run = run_plugin(*roundtrip_args(stack, variant, "--mode", "submit", flag))
    assert_state(
        run,
        2,
        "CRITICAL",
        f"EMAIL_ROUNDTRIP CRITICAL - SMTP connect failed: {variant.host} has no {family} address "
        "(-6 asks for one)",
    )


def test_4_and_6_together_are_a_usage_error(stack):
    run = run_plugin(*roundtrip_args(stack, stack.cert_variant("valid"), "-4", "-6"))
    assert_state(run, 3, "UNKNOWN", "EMAIL_ROUNDTRIP UNKNOWN - -4 and -6 together: choose one address family")
