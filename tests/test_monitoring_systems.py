"""check_email_roundtrip inside real monitoring systems: Icinga 2 and Nagios 4.

The harness (tests/monitoring/) installs the Debian packages when they are
missing (icinga2-bin, icinga2-common, nagios4-core; no daemon is started by
the install) and runs everything on private configurations: /etc/icinga2 and
/etc/nagios4 are neither read nor changed.
"""

import os
import re

import monitoring
import pytest
from mailstack import IMAPS_PORT, SUBMISSIONS_PORT
from monitoring import (
    COMMAND_CONF,
    SERVICES_CONF,
    Icinga2Instance,
    command_conf_files,
    critical_lines,
    icinga2_validate,
    nagios4_verify,
    readme_nagios_blocks,
)

OK_PREFIX = "EMAIL_ROUNDTRIP OK - round trip "
SUBMIT_OK_PREFIX = "EMAIL_ROUNDTRIP OK - submitted in "
ENV_SERVICE = "email-submit-env-password"


@pytest.fixture(scope="module", autouse=True)
def monitoring_packages():
    """Install Icinga 2 and Nagios 4 once, before the first test needs them."""
    installed, seconds = monitoring.ensure_packages()
    if installed:
        print(f"installed {' '.join(installed)} in {seconds:.1f} s")
    return installed


def _template_files():
    """The CheckCommand (none when the Debian package put it into the ITL: then
    <plugins-contrib> defines it) and the example services."""
    assert os.path.isfile(COMMAND_CONF), f"{COMMAND_CONF} is missing"
    files = command_conf_files()
    # services.conf holds example apply rules; validated whenever it exists
    if os.path.isfile(SERVICES_CONF):
        files.append(SERVICES_CONF)
    return files


def _example_host():
    """The commented-out example Host of services.conf, if it has one."""
    if not os.path.isfile(SERVICES_CONF):
        return ""
    with open(SERVICES_CONF, encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(r"^object Host \"[^\"]+\" \{.*?^\}", text, re.M | re.S)
    return match.group(0) + "\n" if match else ""


def _describe(result, instance):
    return f"Icinga 2 recorded: {result!r}\n{instance.logs(30)}"


# -- Icinga 2: configuration --------------------------------------------------
def test_icinga2_validates_the_templates():
    rc, output = icinga2_validate(_template_files())
    assert rc == 0, output
    assert critical_lines(output) == [], output
    assert "Instantiated" in output and "CheckCommand" in output, output


AGENT_SETUP = """\
const NodeName = "master.example.com"
const ZoneName = "master"
object Endpoint NodeName { }
object Zone ZoneName { endpoints = [ NodeName ] }
object Endpoint "agent.example.com" { }
object Zone "agent.example.com" { endpoints = [ "agent.example.com" ]; parent = ZoneName }
object Host "agent.example.com" {
  zone = ZoneName   // as if in zones.d/master: command_endpoint needs a zone
  check_command = "dummy"
  vars.agent_endpoint = name
  vars.email_relay = "mail.example.com"
  vars.email_probe_user = "probe@example.com"
}
"""


def test_icinga2_validates_the_example_services_applied_to_their_example_hosts():
    """The apply rules evaluated for hosts that opt in (not just 'matched nothing'):
    services.conf's own commented-out example Host, and an agent host in a
    child zone for the command_endpoint rule (host vars as services.conf uses
    them: agent_endpoint, email_relay, email_probe_user)."""
    host = _example_host()
    files = _template_files()
    if not host:
        # no example host to apply to: a host of our own that opts in
        host = ('object Host "mail.example.com" {\n  check_command = "dummy"\n'
                '  address = "127.0.0.1"\n  vars.email_probe_user = "probe@example.com"\n}\n')
    rc, output = icinga2_validate(files + [host, AGENT_SETUP])
    assert rc == 0, output
    assert critical_lines(output) == [], output
    if SERVICES_CONF in files:
        assert re.search(r"Instantiated \d+ Services?\.", output), output
        assert "does not match anywhere" not in output, output


def test_icinga2_validation_catches_a_broken_configuration():
    """The harness does validate: an unknown CheckCommand attribute is an error."""
    broken = 'object CheckCommand "broken" {\n  command = [ "/bin/true" ]\n  no_such_attribute = 1\n}\n'
    rc, output = icinga2_validate(command_conf_files() + [broken])
    assert rc != 0, output
    assert critical_lines(output), output


# -- Icinga 2: a running daemon executes the check ------------------------------
@pytest.fixture(scope="module")
def icinga(stack):
    env_service = (
        f'object Service "{ENV_SERVICE}" {{\n'
        f'  host_name = "{Icinga2Instance.HOST}"\n'
        '  check_command = "email_roundtrip"\n'
        '  check_interval = 30s\n'
        '  enable_notifications = false\n'
        '  vars.email_roundtrip_hostname = "localhost"\n'
        '  vars.email_roundtrip_mode = "submit"\n'
        f'  vars.email_roundtrip_ca_file = "{stack.ca}"\n'
        f'  vars.email_roundtrip_smtp_port = {SUBMISSIONS_PORT}\n'
        '  vars.email_roundtrip_smtp_security = "tls"\n'
        f'  vars.email_roundtrip_smtp_user = "{stack.address("probe")}"\n'
        f'  vars.email_roundtrip_smtp_password = "{stack.password("probe")}"\n'
        '}\n')
    instance = Icinga2Instance(stack, extra_config=env_service,
                               check_interval=30)
    instance.start()
    try:
        yield instance
    finally:
        left = instance.stop()
        assert left == [], f"icinga2 processes still alive after stop: {left}"


def test_icinga2_runs_the_round_trip_and_records_ok(icinga):
    result = icinga.check_now()
    why = _describe(result, icinga)
    assert result["state"] == 0, why
    assert result["exit_status"] == 0, why
    assert result["output"].startswith(OK_PREFIX), why
    labels = [item.split("=", 1)[0] for item in result["performance_data"] or []]
    assert "roundtrip" in labels and "smtp_connect" in labels, why
    # the command Icinga built from the CheckCommand and the service vars
    command = result["command"]
    assert command[0] == os.path.join(monitoring.plugin_dir(), "check_email_roundtrip"), why
    for option, value in (("--smtp-port", str(SUBMISSIONS_PORT)), ("--imap-port", str(IMAPS_PORT)),
                          ("--smtp-security", "tls"), ("--imap-security", "tls"),
                          ("--smtp-user", "probe@example.test")):
        assert command[command.index(option) + 1] == value, why
    assert "--smtp-password-file" in command, why


def test_icinga2_passes_the_password_variable_as_environment_not_argument(icinga, stack):
    result = icinga.check_now(ENV_SERVICE)
    why = _describe(result, icinga)
    assert result["state"] == 0, why
    assert result["output"].startswith(SUBMIT_OK_PREFIX), why
    assert stack.password("probe") not in " ".join(result["command"]), why
    assert "--smtp-password-file" not in result["command"], why


# -- Nagios 4 -------------------------------------------------------------------
def test_nagios4_verifies_the_readme_command_definition():
    blocks = readme_nagios_blocks()
    commands = [b for b in blocks if re.match(r"\s*define\s+command", b)]
    assert len(commands) == 1, blocks
    rc, output = nagios4_verify("\n".join(blocks))
    assert rc == 0, output
    assert re.search(r"^Total Errors:\s+0$", output, re.M), output
    assert "Total Errors:   0" in output, output
    # nagios4 -v does not look at the executable: $USER1$ is the plugin's directory
    line = re.search(r"command_line\s+(\S+)", commands[0]).group(1)
    executable = line.replace("$USER1$", monitoring.plugin_dir())
    assert os.access(executable, os.X_OK), executable


def test_nagios4_verification_catches_an_undefined_command():
    rc, output = nagios4_verify(
        "define command {\n    command_name    check_email_roundtrip\n"
        "    command_line    $USER1$/check_email_roundtrip -H $HOSTADDRESS$\n}\n"
        "define service {\n    use generic-service\n    host_name mail.example.com\n"
        "    service_description other\n    check_command no_such_command\n}\n")
    assert rc != 0, output
    assert not re.search(r"^Total Errors:\s+0$", output, re.M), output
