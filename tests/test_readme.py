"""The README documents every option, perfdata label and failure phase."""

import pathlib
import re

from check_email_roundtrip.check import PERFDATA
from check_email_roundtrip.cli import build_parser
from check_email_roundtrip.errors import Phase

README = (pathlib.Path(__file__).parent.parent / "README.md").read_text()


def test_every_option_is_in_the_options_table():
    table = README.split("## Options", 1)[1].split("\n## ", 1)[0]
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert f"`{option}" in table, option


def test_every_perfdata_label_is_documented():
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", README, re.M))
    assert set(PERFDATA) <= documented
    for label in PERFDATA:
        assert len(label) <= 19 and re.fullmatch(r"[a-z0-9_]+", label)


def test_every_phase_is_documented():
    for phase in Phase:
        assert f"`{phase.value}`" in README, phase.value
