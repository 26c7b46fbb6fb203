"""The receiver's verdicts and the DNS checks, against real rspamd and dnsmasq.

Mail goes submission -> rspamd signs -> inbound port -> rspamd verifies SPF,
DKIM, DMARC and writes Authentication-Results -> Dovecot.  Each test changes
the published records (dnsmasq is restarted, rspamd caches nothing) and puts
them back afterwards.
"""

import socket

import pytest
from conftest import assert_state, run_plugin
from mailstack import DNS_PORT
from test_roundtrip_stack import implicit_tls_args

NAMESERVER = f"127.0.0.1:{DNS_PORT}"


def verdict_args(stack, *extra):
    return implicit_tls_args(stack, "probe", "--dns-checks", "--nameserver", NAMESERVER, *extra)


@pytest.fixture
def dns(stack):
    yield stack
    stack.reset_dns()


def verdict_lines(run):
    return [line for line in run.lines if line.split("=")[0].split(":")[0] in ("spf", "dkim", "dmarc", "arc")]


def test_all_three_pass(dns):
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 0, "OK", "EMAIL_ROUNDTRIP OK - round trip ")
    lines = verdict_lines(run)
    assert lines[0] == "spf=pass (smtp.mailfrom=probe@example.test)"
    assert lines[1].startswith("dkim=pass (header.d=example.test, header.s=s2026")
    assert lines[2].startswith("dmarc=pass (p=quarantine") and "header.from=example.test" in lines[2]
    perf = run.perfdata
    assert (perf["auth_spf"], perf["auth_dkim"], perf["auth_dmarc"], perf["dns_findings"]) == (1, 1, 1, 0)


def test_dkim_key_removed_from_dns(dns):
    dns.set_dns(dkim=None)
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - dkim=")
    assert not run.first_line.startswith("EMAIL_ROUNDTRIP WARNING - dkim=pass")
    assert "DKIM key s2026._domainkey.example.test not published" in run.lines
    assert any(line.startswith("dmarc=pass") for line in run.lines)  # SPF still aligns
    assert run.perfdata["auth_dkim"] == 0 and run.perfdata["dns_findings"] == 1


def test_dkim_key_revoked(dns):
    dns.set_dns(dkim="v=DKIM1; k=rsa; p=")
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 1, "WARNING", "dkim=")
    assert "DKIM key s2026._domainkey.example.test is revoked (empty p=)" in run.lines


def test_wrong_dkim_key_fails_dkim_while_dns_finds_the_key_fine(dns):
    # A valid key, but not the one the signer uses: only the verifier can tell.
    dns.set_dns(dkim=dns.dkim_other_public_txt())
    run = run_plugin(*verdict_args(dns))
    assert_state(
        run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - dkim=fail (header.d=example.test, header.s=s2026"
    )
    assert run.perfdata["dns_findings"] == 0


def test_spf_excluding_the_relay_warns_while_dmarc_passes_through_dkim(dns):
    dns.set_dns(spf="v=spf1 ip4:192.0.2.1 -all")
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - spf=fail (smtp.mailfrom=probe@example.test, ")
    assert "does not designate 127.0.0.1 as permitted sender" in run.first_line  # the receiver's own words
    assert any(line.startswith("dmarc=pass") for line in run.lines)
    assert (
        "SPF record of example.test does not name 127.0.0.1, the address the mail came from (fail)"
        in run.lines
    )


def test_spf_and_dkim_broken_fail_dmarc_critical(dns):
    dns.set_dns(spf="v=spf1 ip4:192.0.2.1 -all", dkim=None)
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - dmarc=fail (p=quarantine")
    assert run.perfdata["auth_dmarc"] == 0


def test_forged_header_in_the_submitted_message_is_ignored(dns):
    # The submission server prepends a forged all-pass header claiming the
    # receiver's own authserv-id (stack knob "+forge"), while the real
    # verdicts fail: the receiver's header, above it, is the one believed.
    dns.set_dns(spf="v=spf1 ip4:192.0.2.1 -all", dkim=None)
    run = run_plugin(*verdict_args(dns, "--to", "probe+forge@example.test", "-v"))
    assert_state(run, 2, "CRITICAL", "EMAIL_ROUNDTRIP CRITICAL - dmarc=fail")
    assert (
        "ignored Authentication-Results header 2 from mx.example.test (not the topmost; "
        "repeats the receiver's methods: possibly forged)"
    ) in run.lines, run.stdout


def test_spf_over_ten_lookups(dns):
    includes = " ".join(f"include:s{i}.spf.example.test" for i in range(4))
    for i in range(4):
        dns.set_txt(f"s{i}.spf.example.test", "v=spf1 a mx -all")
    dns.set_dns(spf=f"v=spf1 ip4:127.0.0.1 {includes} -all")
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 1, "WARNING")
    assert "SPF record of example.test needs 12 DNS lookups (RFC 7208 limit 10)" in run.lines


def test_dmarc_record_missing(dns):
    dns.set_dns(dmarc=None)
    run = run_plugin(*verdict_args(dns))
    assert_state(run, 1, "WARNING")
    assert "DMARC record _dmarc.example.test not published" in run.lines


def test_authserv_id_of_another_receiver_trusts_nothing(dns):
    run = run_plugin(*implicit_tls_args(dns, "probe", "--authserv-id", "other.example.net"))
    assert_state(
        run, 1, "WARNING", "EMAIL_ROUNDTRIP WARNING - no Authentication-Results header from the receiver"
    )


def test_dns_time_out_is_reported_as_such(dns):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # answers nothing
    silent.bind(("127.0.0.1", 0))
    try:
        run = run_plugin(
            *implicit_tls_args(
                dns,
                "probe",
                "--dns-checks",
                "--nameserver",
                f"127.0.0.1:{silent.getsockname()[1]}",
                "-t",
                "20",
            )
        )
    finally:
        silent.close()
    assert_state(run, 1, "WARNING")
    assert any("timed out after" in line and line.startswith("DNS lookup of TXT") for line in run.lines), (
        run.stdout
    )
    assert not any("not published" in line for line in run.lines)
