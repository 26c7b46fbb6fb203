"""What Sensu Go and a Zabbix external check make of the output.

Sensu Go (output_metric_format: nagios_perfdata) splits the whole output on
"|" and wants exactly two parts, then splits the second on spaces into
label=value[UOM];warn;crit;min;max.  A Zabbix external check ignores the exit
code: the item value is stdout and stderr together, so the state word must be
in the text and stderr must stay empty.
"""

import re

import pytest
from conftest import run_plugin
from test_roundtrip_stack import implicit_tls_args


def sensu_nagios_perfdata(output: str) -> dict:
    """A transcription of Sensu Go's nagios_perfdata extractor."""
    parts = output.split("|")
    assert len(parts) == 2, f"sensu: invalid nagios perfdata, {len(parts)} parts"
    metrics = {}
    for item in parts[1].strip().split(" "):
        fields = item.split(";")
        label, sep, value = fields[0].partition("=")
        assert sep and label, f"sensu: invalid metric {item!r}"
        assert label == label.strip("'\""), "labels keep their quotes in Sensu: avoid them"
        number = re.match(r"^-?\d+(\.\d+)?", value)
        assert number, f"sensu: cannot parse value {value!r}"
        metrics[label] = float(number.group(0))
    return metrics


def zabbix_item_value(run) -> str:
    return (run.stdout + run.stderr).strip()


@pytest.mark.parametrize(
    "extra, state",
    [
        ((), "OK"),
        (("--mode", "submit"), "OK"),
        (("--phase-warning", "smtp_connect=0:0", "--phase-warning", "smtp_submit=0:0"), "WARNING"),
        (("--smtp-port", "1"), "CRITICAL"),
    ],
)
def test_sensu_and_zabbix_read_the_output(stack, extra, state):
    run = run_plugin(*implicit_tls_args(stack, "probe", *extra))
    metrics = sensu_nagios_perfdata(run.stdout)
    assert metrics, run.stdout
    assert all(re.fullmatch(r"[a-z0-9_]+", label) for label in metrics)
    value = zabbix_item_value(run)
    assert value.splitlines()[0].startswith(f"EMAIL_ROUNDTRIP {state} - ")
    assert run.stderr == ""
