"""The Zabbix template is what its generator makes, its key is a command
line the plugin accepts, its limits stay under Zabbix's item timeout, and
its JSONPaths name what the JSON output has (check_email_roundtrip's
output-schema.json).  tests/test_zabbix.py runs it in a real Zabbix."""

import json
import pathlib
import re

import pytest
from monitoring.zabbix import template_generator

from check_email_roundtrip.cli import parse_settings

TEMPLATES = pathlib.Path(__file__).parent.parent / "zabbix-templates"
SCHEMA = pathlib.Path(__file__).parent.parent / "check_email_roundtrip" / "output-schema.json"
MACRO = re.compile(r"\{\$[A-Z0-9_.]+\}")


GEN = template_generator()
DEFAULTS = {macro.name: macro.default for macro in GEN.macros()}


def command_line(overrides=None):
    """The master item's key as the argv Zabbix would run, with the
    template's macro defaults (and overrides) and a host name."""
    values = dict(DEFAULTS, **(overrides or {}))
    words = []
    for word in GEN.key_words():
        for name in MACRO.findall(word):
            word = word.replace(name, values[name])
        words.append(word.replace("{HOST.HOST}", "mail-host"))
    return words


@pytest.fixture
def settings(tmp_path):
    """parse_settings of the key's command line, with a password file that exists."""
    password = tmp_path / "probe.password"
    password.write_text("secret\n")
    password.chmod(0o600)

    def parse(overrides=None):
        return parse_settings(command_line({"{$EMAIL.PASSWORD.FILE}": str(password), **(overrides or {})}))

    return parse


def test_committed_template_is_what_the_generator_makes():
    assert GEN.main(["--check"]) == 0, "run: python3 zabbix-templates/generate.py"


def test_the_key_with_the_default_macros_is_a_command_line_the_plugin_takes(settings):
    words = command_line()
    assert all(words), words  # an empty key parameter would be an empty argument
    chosen = settings()
    assert str(chosen.outputs.format) == "json"
    assert chosen.no_wait is True  # Zabbix kills external checks after its Timeout
    assert chosen.timeout < GEN.SERVER_TIMEOUT, chosen.timeout
    assert chosen.step_timeout < chosen.timeout
    assert chosen.memory.state_file == "/var/lib/zabbix/check_email_roundtrip/mail-host.json"
    assert chosen.smtp.user == chosen.imap.user == "probe@example.com"
    assert "--smtp-password-file" in words and "--smtp-password" not in words


def test_the_waiting_alternative_the_readme_gives_parses_and_fits_the_timeout(settings):
    chosen = settings({"{$EMAIL.WAIT.MODE}": "--wait=15", "{$EMAIL.RT.WARN}": "10", "{$EMAIL.RT.CRIT}": "14"})
    assert chosen.no_wait is False
    assert chosen.wait == 15 and chosen.wait < chosen.timeout < GEN.SERVER_TIMEOUT


def test_a_long_wait_keeps_the_timeout_under_zabbix_s(settings):
    """-t is given, not derived from --wait: a run that waits too long ends
    UNKNOWN naming its stage before Zabbix's Timeout kills it silently."""
    chosen = settings({"{$EMAIL.WAIT.MODE}": "--wait=60"})
    assert chosen.timeout == float(DEFAULTS["{$EMAIL.TIMEOUT}"]) < GEN.SERVER_TIMEOUT


def test_every_macro_is_defined_and_used():
    template = GEN.template()["zabbix_export"]["templates"][0]
    text = GEN.template_yaml()
    used = set(MACRO.findall(text.replace(text[text.index("macros:") :], "")))
    defined = {macro["macro"] for macro in template["macros"]}
    assert used <= defined, used - defined
    assert defined <= used, defined - used


def test_uuids_are_unique_version_4_and_stable():
    uuids = re.findall(r"uuid: '?([0-9a-f]+)'?", GEN.template_yaml())
    assert len(uuids) == len(set(uuids)) > 20
    for value in uuids:
        assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", value), value
    assert GEN.template_yaml() == GEN.template_yaml()


def test_dependent_items_hang_on_the_master_and_triggers_on_template_items():
    items = GEN.template()["zabbix_export"]["templates"][0]["items"]
    master, dependents = items[0], items[1:]
    assert master["type"] == "EXTERNAL" and master["value_type"] == "TEXT"
    keys = {item["key"] for item in items}
    for item in dependents:
        assert item["type"] == "DEPENDENT" and item["master_item"]["key"] == master["key"], item["key"]
        assert item["preprocessing"][0]["type"] == "JSONPATH", item["key"]
    for item in items:
        for trigger in item.get("triggers", []):
            rest = trigger["expression"]
            for key in sorted(keys, key=len, reverse=True):
                rest = rest.replace(f"/{GEN.TEMPLATE}/{key}", "")
            assert rest != trigger["expression"] and f"/{GEN.TEMPLATE}/" not in rest, trigger["expression"]


def _members(path):
    """The member names a JSONPath walks, filters and functions left out."""
    return [part for part in re.sub(r"\[.*?\]|\.\w+\(\)", "", path).split(".")[1:] if part]


def test_every_jsonpath_names_what_the_json_output_has():
    schema = json.loads(SCHEMA.read_text())
    defs = schema["$defs"]
    top = set(schema["required"])
    for item in GEN.items():
        if item.within:
            (outer,) = _members(item.within)
            assert outer in top, item.key
            assert set(_members(item.path)) <= set(defs[outer]["required"]), item.key
            continue
        members = _members(item.path)
        assert members[0] in top, item.key
        if members[0] == "certificates":
            assert members[1] in schema["properties"]["certificates"]["properties"], item.key
            assert members[2] in defs["certificate"]["required"], item.key
        if members[0] == "hops":
            assert members[1] in defs["hop"]["required"], item.key
    assert GEN.verdict_methods() == defs["verdict"]["properties"]["method"]["enum"]


def test_the_state_value_map_is_the_nagios_exit_codes():
    valuemap = GEN.template()["zabbix_export"]["templates"][0]["valuemaps"][0]
    assert [(m["value"], m["newvalue"]) for m in valuemap["mappings"]] == [
        ("0", "OK"),
        ("1", "WARNING"),
        ("2", "CRITICAL"),
        ("3", "UNKNOWN"),
    ]


def test_readme_lists_every_macro_item_and_trigger():
    readme = (TEMPLATES / "README.md").read_text()
    for macro in GEN.macros():
        assert f"| `{macro.name}` |" in readme, macro.name
    for item in GEN.items():
        assert f"| `{item.key}` |" in readme, item.key
    assert GEN.nodata_trigger()["name"] in readme
