"""The Icinga 2 CheckCommand and its variable table match the plugin's parser."""

import importlib.util
import pathlib
import re

from check_email_roundtrip.cli import build_parser

TEMPLATES = pathlib.Path(__file__).parent.parent / "icinga2-templates"


def generator():
    spec = importlib.util.spec_from_file_location("generate", TEMPLATES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_templates_are_what_the_parser_generates():
    assert generator().main(["--check"]) == 0, "run: python3 icinga2-templates/generate.py"


def test_every_long_option_is_an_argument_with_its_variable():
    conf = (TEMPLATES / "email_roundtrip.conf").read_text()
    for action in build_parser()._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs[0] in ("--help", "--version"):
            continue
        variable = "email_roundtrip_" + longs[0][2:].replace("-", "_")
        block = re.search(rf'"{re.escape(longs[0])}" = \{{(.*?)\n\t\t\}}', conf, re.S)
        assert block, longs[0]
        key = "set_if" if action.nargs == 0 else "value"
        assert f'{key} = "${variable}$"' in block.group(1), longs[0]
        assert "description = " in block.group(1)


def test_passwords_only_through_env_and_timeout_beyond_the_wait_budget():
    conf = (TEMPLATES / "email_roundtrip.conf").read_text()
    assert 'CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD = "$email_roundtrip_smtp_password$"' in conf
    assert '--smtp-password"' not in conf and '--imap-password"' not in conf
    assert re.search(r"timeout = 6m", conf)  # > the default -t of 335 s
    readme = (TEMPLATES / "README.md").read_text()
    assert "| `email_roundtrip_smtp_password` | Optional |" in readme
