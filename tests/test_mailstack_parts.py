"""Parts of the mail stack that need no daemon: ports from the base, the
configuration templates, DNS record text."""

import collections
import gzip
import pathlib
import re

import pytest
from mailstack import config, dnsmasq, system


@pytest.mark.parametrize("base, submission, imaps, dns", [
    (None, 10587, 10993, 10053),
    ("10000", 10587, 10993, 10053),
    ("20000", 20587, 20993, 20053),
])
def test_ports_are_the_base_plus_the_well_known_port(base, submission, imaps, dns):
    environ = {} if base is None else {"MAILSTACK_PORT_BASE": base}
    port_base = config.port_base(environ)
    assert (port_base + 587, port_base + 993, port_base + 53) == (submission, imaps, dns)


def test_the_stack_modules_ports_follow_the_environment():
    base = config.port_base()
    assert (config.SUBMISSION_PORT, config.SUBMISSIONS_PORT, config.MX_PORT, config.IMAP_PORT,
            config.IMAPS_PORT, config.SUBMISSIONS_EXPIRED_PORT, config.IMAPS_EXPIRED_PORT,
            config.GREYLIST_POLICY_PORT, config.DNS_PORT, config.RSPAMD_MILTER_PORT,
            config.RSPAMD_CONTROLLER_PORT) == tuple(base + offset for offset in (
                587, 465, 25, 143, 993, 466, 994, 28, 53, 332, 334))


@pytest.mark.parametrize("base", ["ten", "80", "65000"])
def test_a_port_base_that_cannot_work_is_refused(base):
    with pytest.raises(ValueError, match="MAILSTACK_PORT_BASE"):
        config.port_base({"MAILSTACK_PORT_BASE": base})


def test_templates_fill_double_braces_and_leave_the_daemons_syntax_alone():
    text = "myorigin = $mydomain\nlog_timestamp = \"%{usecs} \"\nx { y = {{value}}; }\n"
    assert system.ConfigTemplate(text).substitute(value=7) == \
        "myorigin = $mydomain\nlog_timestamp = \"%{usecs} \"\nx { y = 7; }\n"


def test_a_template_placeholder_without_a_value_or_a_stray_opening_is_an_error():
    with pytest.raises(KeyError, match="missing"):
        system.ConfigTemplate("{{missing}}").substitute()
    with pytest.raises(ValueError):
        system.ConfigTemplate("a {{ b").substitute()


def test_every_template_names_only_placeholders():
    for path in sorted(system.TEMPLATES.rglob("*")):
        if path.is_file():
            # any value for any name; a "{{" that opens no placeholder is a ValueError
            system.ConfigTemplate(path.read_text()).substitute(collections.defaultdict(str))


def test_long_txt_values_are_split_into_255_byte_strings():
    value = "v=DKIM1; k=rsa; p=" + "A" * 400
    chunks = dnsmasq.txt_chunks(value)
    assert [len(c) for c in chunks] == [255, len(value) - 255] and "".join(chunks) == value
    assert dnsmasq.txt_chunks("") == [""]
    assert dnsmasq.quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("name", ["", "a..b", "-" * 64 + ".test", "spaß.test", "a b.test"])
def test_bad_dns_names_are_refused(name):
    with pytest.raises(ValueError):
        dnsmasq.checked_name(name)


def test_dns_names_are_kept_in_lower_case_without_the_final_dot():
    assert dnsmasq.checked_name(" S1._DomainKey.Example.Test. ") == "s1._domainkey.example.test"
    assert dnsmasq.checked_values(None, "x") == [] and dnsmasq.checked_values("v", "x") == ["v"]
    with pytest.raises(ValueError):
        dnsmasq.checked_values("v=spf1 \u00e9", "x")


def test_the_idp_port_is_the_base_plus_443():
    assert config.IDP_PORT == config.port_base() + 443


def test_the_oauth2_passdb_file_names_only_keys_dovecot_knows(stack):
    """An unknown key in it breaks Dovecot's whole auth process, passwords too.
    Known: the keys of dovecot-core's reference file, and of its wiki page's
    examples (client_id and client_secret are only there).  The stack fixture
    has installed dovecot-core."""
    reference = pathlib.Path("/usr/share/dovecot/dovecot-oauth2.conf.ext")
    wiki = pathlib.Path("/usr/share/doc/dovecot-core/wiki/PasswordDatabase.oauth2.txt.gz")
    assert reference.exists() and wiki.exists(), "dovecot-core's files are missing"
    text = reference.read_text() + gzip.decompress(wiki.read_bytes()).decode()
    known = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.M))
    template = (system.TEMPLATES / "dovecot/oauth2.conf.ext").read_text()
    ours = set(re.findall(r"^([a-z_]+)\s*=", template, re.M))
    assert ours and ours <= known, ours - known
