"""--output json and --prometheus-textfile without a mail server: usage
errors, a bug's traceback, the format chosen before the options parse, the
schema and its validator, the textfile's escaping (real runs on the stack:
test_outputs_stack.py)."""

import copy
import json
import os
import re

import pytest
from conftest import assert_state, run_plugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn
from promtool import check_metrics
from schema import SchemaError, errors, json_output, load_schema

from check_email_roundtrip.cli import _long_options
from check_email_roundtrip.errors import Phase
from check_email_roundtrip.render import Report, json_document, requested_format
from check_email_roundtrip.textfile import LAST_SUCCESS, escape, exposition, previous_success

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# what any run states; every other key is empty (null, [] or {}) when nothing ran
ALWAYS = ("version", "plugin", "plugin_version", "state", "exit_code", "summary", "time")


def assert_unknown_before_any_probe(run, summary):
    document = json_output(run)
    assert run.returncode == 3
    assert document["state"] == "UNKNOWN" and document["summary"] == summary
    assert ISO_UTC.match(document["time"])
    assert (document["version"], document["plugin"]) == (1, "check_email_roundtrip")
    assert {key: value for key, value in document.items() if value not in (None, [], {})} == {
        key: document[key] for key in ALWAYS
    }
    return document


# -- usage errors in the format asked for ----------------------------------------------------------
def test_bad_option_is_one_json_object():
    run = run_plugin("--output", "json", "--bogus")
    assert_unknown_before_any_probe(run, "unrecognized arguments: --bogus (see --help)")


def test_a_usage_error_found_after_parsing_is_json_too():
    run = run_plugin("--from", "a@example.test", "--output=json")
    assert_unknown_before_any_probe(run, "no SMTP server: give -H/--hostname or --smtp-host (see --help)")


def test_a_bad_value_of_another_option_is_json_when_json_was_asked_for():
    run = run_plugin("-H", "localhost", "--from", "a@example.test", "-w", "10:5", "--outp", "json")
    assert_unknown_before_any_probe(
        run,
        "argument -w/--warning: invalid range '10:5': start 10 must not be greater than end 5 (see --help)",
    )


def test_the_format_is_text_unless_json_is_asked_for_unambiguously():
    for args in (["--bogus"], ["--o", "json", "--bogus"], ["--output", "xml"], ["--", "--output", "json"]):
        run = run_plugin(*args)
        assert_state(run, 3, "UNKNOWN")
        assert len(run.lines) == 1 and not run.stdout.startswith("{"), run.describe()


def test_requested_format_reads_argv_as_argparse_would():
    longs = _long_options()
    assert requested_format(["--output", "json"], longs) == "json"
    assert requested_format(["--output=json"], longs) == "json"
    assert requested_format(["--outp", "json"], longs) == "json"  # a prefix of --output alone
    assert requested_format(["--o", "json"], longs) == "text"  # also --oauth-*: argparse refuses it
    assert requested_format(["--output", "json", "--output", "text"], longs) == "text"  # the last wins
    assert requested_format(["--output"], longs) == "text"
    assert requested_format(["--", "--output", "json"], longs) == "text"
    assert requested_format(["--outp", "json"]) == "text"  # no option table: the full name only


def test_textfile_not_ending_in_prom_is_a_usage_error(tmp_path):
    path = tmp_path / "metrics.txt"
    run = run_plugin("-H", "localhost", "--from", "a@example.test", "--prometheus-textfile", str(path))
    assert_state(run, 3, "UNKNOWN", "does not end in .prom: node_exporter's textfile collector reads only")
    assert not path.exists()


def test_a_usage_error_leaves_the_textfile_alone(tmp_path):
    path = tmp_path / "mail.prom"
    path.write_text("# written by an earlier run\n")
    run = run_plugin("--output", "json", "--prometheus-textfile", str(path), "--bogus")
    assert_unknown_before_any_probe(run, "unrecognized arguments: --bogus (see --help)")
    assert path.read_text() == "# written by an earlier run\n"


def test_missing_dependency_is_json_when_asked_for(tmp_path):
    (tmp_path / "nagiosplugin.py").write_text(
        "raise ImportError(\"No module named 'nagiosplugin'\", name='nagiosplugin')\n"
    )
    run = run_plugin("--output", "json", "-H", "localhost", env={"PYTHONPATH": str(tmp_path)})
    assert_unknown_before_any_probe(
        run,
        "missing Python module nagiosplugin: install the plugin with its dependencies "
        "(pip install check_email_roundtrip)",
    )


def test_a_bug_at_vvv_puts_its_masked_traceback_into_details(tmp_path):
    # sitecustomize runs before the plugin: it breaks the check the way a bug would
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n"
        "import check_email_roundtrip.run as run\n"
        "def broken(settings, started=None):\n"
        "    raise RuntimeError('bug, quoting ' + os.environ['CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD'])\n"
        "run.run_check = broken\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "CHECK_EMAIL_ROUNDTRIP_SMTP_PASSWORD": "s3cret-Pass"}
    args = ["-H", "localhost", "--smtp-user", "probe@example.test", "--output", "json"]
    run = run_plugin(*args, "-vvv", env=env)
    document = json_output(run)
    assert run.returncode == 3 and document["state"] == "UNKNOWN"
    assert document["summary"] == "RuntimeError: bug, quoting ********"
    assert document["details"][0] == "Traceback (most recent call last):"
    assert document["details"][-1] == "RuntimeError: bug, quoting ********"
    assert "s3cret-Pass" not in run.stdout
    run = run_plugin(*args, env=env)  # no diagnostics unless asked for
    assert json_output(run)["details"] == []


# -- the schema and its validator ------------------------------------------------------------------
def test_the_schema_names_every_phase_and_the_document_every_key():
    schema = load_schema()
    # every phase the plugin can name validates (a phase of a branch not merged yet may be listed)
    named = schema["$defs"]["error"]["properties"]["phase"]["enum"]
    assert {phase.value for phase in Phase} <= set(named) and len(named) == len(set(named))
    blank = json_document("UNKNOWN", 3, "x", started_at=0.0)
    assert list(blank) == schema["required"] and set(blank) == set(schema["properties"])
    assert errors(blank, schema) == []


def test_the_validator_catches_what_the_schema_forbids():
    schema = load_schema()
    good = json_document("OK", 0, "fine", started_at=1764650000.0)
    good["perfdata"] = {
        "roundtrip": {"value": 0.1, "uom": "s", "warning": "60", "critical": None, "min": 0, "max": None}
    }
    assert errors(good, schema) == []
    for change, expected in (
        (lambda d: d.pop("hops"), "'hops' is missing"),
        (lambda d: d.update(state="FINE"), "is not one of"),
        (lambda d: d.update(exit_code=True), "is not one of"),
        (lambda d: d.update(extra=1), "'extra' is not allowed"),
        (lambda d: d.update(time="2026-12-02 03:00:00"), "does not match"),
        (lambda d: d.update(roundtrip=-1), "is below 0"),
        (lambda d: d["perfdata"].update({"Bad-Label": d["perfdata"]["roundtrip"]}), "does not match"),
        (lambda d: d["perfdata"]["roundtrip"].update(uom="ms"), "is not one of"),
        (lambda d: d.update(error={"phase": "SMTP AUTH", "code": 535, "reason": "x"}), "matches none"),
        (lambda d: d.update(verdicts=[{"method": "spf"}]), "'result' is missing"),
    ):
        bad = copy.deepcopy(good)
        change(bad)
        assert any(expected in problem for problem in errors(bad, schema)), expected


def test_the_validator_refuses_keywords_it_does_not_check():
    with pytest.raises(SchemaError):
        errors({}, {"type": "object", "maxProperties": 3})


# -- the textfile ----------------------------------------------------------------------------------
def _report(state=Ok, started_at=1764650000.5):
    return Report(state=state, summary="", details=(), perfdata=(), started_at=started_at)


def test_label_values_are_escaped_and_promtool_accepts_them():
    assert escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    labels = {"check": 'odd "name"\\', "recipient": "probe+x@example.test\nnext", "smtp_host": "mäil.example"}
    text = exposition(_report(), labels, None)
    ok, said = check_metrics(text)
    assert ok, said + "\n" + text
    assert (
        'check="odd \\"name\\"\\\\",recipient="probe+x@example.test\\nnext",smtp_host="mäil.example"' in text
    )


def test_last_success_is_this_run_when_ok_else_the_previous_one(tmp_path):
    labels = {"check": "mail"}
    text = exposition(_report(Ok, 1764650000.5), labels, 1764640000.0)
    assert f'{LAST_SUCCESS}{{check="mail"}} 1764650000.5' in text.splitlines()
    path = tmp_path / "mail.prom"
    path.write_text(text)
    assert previous_success(str(path)) == 1764650000.5
    for state in (Warn, Critical, Unknown):
        failed = exposition(_report(state, 1764660000.0), labels, previous_success(str(path)))
        assert f'{LAST_SUCCESS}{{check="mail"}} 1764650000.5' in failed.splitlines()
        assert 'email_roundtrip_success{check="mail"} 0' in failed.splitlines()
        assert f'email_roundtrip_state{{check="mail"}} {int(state)}' in failed.splitlines()
    # never a success known: no such sample at all (not a 0 that reads as 1970)
    assert LAST_SUCCESS not in exposition(_report(Critical), labels, None)


def test_previous_success_believes_only_a_sane_time(tmp_path):
    path = tmp_path / "mail.prom"
    for content in (
        "",
        "garbage\n",
        f"{LAST_SUCCESS} NaN\n",
        f"{LAST_SUCCESS} 12\n",
        f"{LAST_SUCCESS} 9e12\n",
    ):
        path.write_text(content)
        assert previous_success(str(path)) is None, content
    assert previous_success(str(tmp_path / "none.prom")) is None
    os.symlink(path, tmp_path / "link.prom")
    path.write_text(f'{LAST_SUCCESS}{{check="a b"}} 1764650000.25\n')
    assert previous_success(str(path)) == 1764650000.25
    assert previous_success(str(tmp_path / "link.prom")) is None  # never read through a link


def test_a_problem_found_after_the_evaluation_is_named_first():
    ok = Report(Ok, "round trip 0.1 s", ("spf=pass",), ())
    warned = ok.with_problem(Warn, "cannot write x")
    assert (warned.state, warned.summary, warned.details) == (Warn, "cannot write x", ("spf=pass",))
    critical = Report(Critical, "SMTP AUTH rejected", (), ())
    both = critical.with_problem(Warn, "cannot write x")
    assert (both.state, both.summary) == (Critical, "SMTP AUTH rejected")
    assert both.details == ("SMTP AUTH rejected", "cannot write x")


def test_dump_is_one_ascii_line():
    from check_email_roundtrip.render import dump_json

    text = dump_json(json_document("OK", 0, "caf\u00e9 \u2028 line", ["a\nb"], started_at=0.0))
    assert text.endswith("\n") and text.count("\n") == 1 and text.isascii()
    assert json.loads(text)["details"] == ["a b"]
