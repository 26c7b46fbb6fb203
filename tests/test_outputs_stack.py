"""--output json and --prometheus-textfile on the real stack: OK, WARNING,
CRITICAL (an auth failure, a bounce, DMARC failing) and UNKNOWN (-t) runs.
Every JSON object is checked against output-schema.json, every textfile by
promtool, and both for the secrets."""

import os
import re
import stat
import time
from datetime import datetime

import pytest
from conftest import run_plugin
from promtool import check_metrics, ensure_promtool
from schema import json_output
from test_fault_matrix import base_args, secrets_of
from test_roundtrip_stack import implicit_tls_args
from test_verdicts_stack import verdict_args

SAMPLE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
TARGET = {
    "check": "mail",
    "mode": "roundtrip",
    "smtp_host": "localhost",
    "imap_host": "localhost",
    "mailbox": "probe@example.test",
    "recipient": "probe@example.test",
}


@pytest.fixture(scope="module", autouse=True)
def promtool():
    return ensure_promtool()


@pytest.fixture
def dns(stack):
    yield stack
    stack.reset_dns()


@pytest.fixture
def held_queue(stack):
    yield
    stack.delete_held()


class Textfile:
    """The .prom file a run wrote, read back and checked by promtool."""

    def __init__(self, path, **target):
        self.target = {**TARGET, **target}  # the labels every sample carries
        self.text = open(path).read()
        ok, said = check_metrics(self.text)
        assert ok, f"promtool: {said}\n{self.text}"
        self.samples = []
        for line in self.text.splitlines():
            if line.startswith("#"):
                continue
            match = SAMPLE.match(line)
            assert match, line
            labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match.group(2)))
            self.samples.append((match.group(1), labels, float(match.group(3))))
        helps = [line.split()[2] for line in self.text.splitlines() if line.startswith("# HELP ")]
        assert len(helps) == len(set(helps)) == len({name for name, _, _ in self.samples})

    def value(self, name, **own):
        found = [value for n, labels, value in self.samples if n == name and labels == {**self.target, **own}]
        assert len(found) == 1, (name, own, self.text)
        return found[0]

    def names(self):
        return {name for name, _, _ in self.samples}

    def of(self, name):
        own = (tuple(sorted(set(labels.items()) - set(self.target.items()))) for _, labels, _ in self.samples)
        return {key: value for key, (n, _, value) in zip(own, self.samples) if n == name}


def json_run(args, textfile, *extra):
    run = run_plugin(*args, "--output", "json", "--prometheus-textfile", str(textfile), *extra)
    return run, json_output(run)


def state_file(tmp_path):
    return ["--state-file", str(tmp_path / "state" / "probe.json")]


def textfile_path(tmp_path):
    directory = tmp_path / "textfiles"
    directory.mkdir(exist_ok=True)
    return directory / "mail.prom"


def test_ok_run(stack, tmp_path):
    textfile = textfile_path(tmp_path)
    started = time.time()
    run, document = json_run(implicit_tls_args(stack), textfile, *state_file(tmp_path))
    assert run.returncode == 0
    assert (document["state"], document["mode"]) == ("OK", "roundtrip")
    assert re.fullmatch(r"round trip \d+\.\d{3} s \(INBOX, queued as \w+\)", document["summary"])
    assert document["details"] == [verdict["line"] for verdict in document["verdicts"]]
    assert [(v["method"], v["result"], v["state"]) for v in document["verdicts"]] == [
        ("spf", "pass", "OK"),
        ("dkim", "pass", "OK"),
        ("dmarc", "pass", "OK"),
    ]
    assert document["verdicts"][0] == {
        "method": "spf",
        "result": "pass",
        "reason": "smtp.mailfrom=probe@example.test",
        "state": "OK",
        "line": "spf=pass (smtp.mailfrom=probe@example.test)",
    }
    assert document["log"] == []  # no -v
    roundtrip = document["roundtrip"]
    assert 0 < roundtrip < 60 and document["phases"]["roundtrip"] == roundtrip
    # every seconds label of the perfdata, and nothing else
    assert set(document["phases"]) == {k for k, v in document["perfdata"].items() if v["uom"] == "s"}
    assert {"roundtrip", "smtp_connect", "smtp_auth", "smtp_submit", "smtp_total", "imap_retrieval"} <= set(
        document["phases"]
    )
    assert document["perfdata"]["roundtrip"] == {
        "value": roundtrip,
        "uom": "s",
        "warning": "60",
        "critical": "300",
        "min": 0,
        "max": None,
    }
    assert document["perfdata"]["late"]["uom"] == "c" and document["perfdata"]["auth_spf"]["max"] == 1
    assert set(document["certificates"]) == {"smtp", "imap"}
    assert document["certificates"]["smtp"]["names"] == "localhost"
    assert document["certificates"]["smtp"]["days"] == document["perfdata"]["smtp_cert_days"]["value"]
    assert (document["late"], document["lost"], document["pending"]) == (0, 0, 0)
    assert (document["error"], document["stopped"], document["dns_findings"]) == (None, None, [])
    run_started = datetime.fromisoformat(document["time"].replace("Z", "+00:00")).timestamp()
    assert started - 1 <= run_started <= time.time()

    metrics = Textfile(textfile)
    assert stat.S_IMODE(os.stat(textfile).st_mode) == 0o644  # node_exporter reads it as its own user
    assert os.listdir(textfile.parent) == ["mail.prom"]  # the temporary file was renamed, none left
    assert metrics.value("email_roundtrip_state") == 0 and metrics.value("email_roundtrip_success") == 1
    assert started - 1 <= metrics.value("email_roundtrip_last_success_timestamp_seconds") <= time.time()
    assert metrics.value("email_roundtrip_seconds") == roundtrip
    assert metrics.of("email_roundtrip_phase_seconds") == {
        (("phase", label),): value for label, value in document["phases"].items() if label != "roundtrip"
    }
    assert set(metrics.of("email_roundtrip_auth_verdict")) == {
        (("method", method), ("result", "pass")) for method in ("spf", "dkim", "dmarc")
    }
    expiry = metrics.value("email_roundtrip_cert_expiry_timestamp_seconds", server="smtp")
    assert abs((expiry - time.time()) / 86400 - document["certificates"]["smtp"]["days"]) < 0.1
    assert (
        metrics.value("email_roundtrip_late_total") == 0 and metrics.value("email_roundtrip_lost_total") == 0
    )


def test_auth_failure_keeps_the_last_success_and_leaks_no_secret(stack, tmp_path):
    textfile = textfile_path(tmp_path)
    json_run(implicit_tls_args(stack), textfile, *state_file(tmp_path))
    last_success = Textfile(textfile).value("email_roundtrip_last_success_timestamp_seconds")

    (tmp_path / "wrong").write_text("revoked-app-password\n")
    args = base_args(stack)
    args[args.index("--smtp-password-file") + 1] = str(tmp_path / "wrong")
    run, document = json_run(args, textfile, "-vvv", *state_file(tmp_path))
    assert run.returncode == 2 and document["state"] == "CRITICAL"
    assert document["summary"].startswith("SMTP AUTH rejected: 535 5.7.8 Error: authentication failed")
    assert document["error"] == {
        "phase": "SMTP AUTH",
        "code": 535,
        "reason": "rejected",
        "server_text": document["error"]["server_text"],
    }
    assert document["error"]["server_text"].startswith("5.7.8 Error: authentication failed")
    assert document["roundtrip"] is None and "roundtrip" not in document["phases"]
    assert "smtp_connect" in document["phases"] and document["verdicts"] == []
    assert any("<AUTH exchange hidden>" in line for line in document["log"])  # the -vvv trace
    metrics = Textfile(textfile)
    for secret in secrets_of(stack):
        assert secret not in run.stdout and secret not in metrics.text
    assert metrics.value("email_roundtrip_state") == 2 and metrics.value("email_roundtrip_success") == 0
    assert metrics.value("email_roundtrip_last_success_timestamp_seconds") == last_success
    assert "email_roundtrip_seconds" not in metrics.names()


def test_bounce(stack, tmp_path):
    textfile = textfile_path(tmp_path)
    run, document = json_run(implicit_tls_args(stack, "probe", "--to", "nobody@example.test"), textfile)
    assert run.returncode == 2 and document["state"] == "CRITICAL"
    assert re.match(r"bounced after \d+\.\d s: 550 5\.1\.1 <nobody@example\.test>: ", document["summary"])
    error = document["error"]
    assert (error["phase"], error["code"]) == ("waiting for delivery", 550)
    assert re.fullmatch(r"bounced after \d+\.\d s \(status 5\.1\.1, nobody@example\.test\)", error["reason"])
    assert error["server_text"].startswith("5.1.1 <nobody@example.test>: Recipient address rejected")
    assert document["roundtrip"] is None and document["verdicts"] == []
    metrics = Textfile(textfile, recipient="nobody@example.test")
    assert metrics.value("email_roundtrip_state") == 2
    assert "email_roundtrip_last_success_timestamp_seconds" not in metrics.names()  # never an OK run


def test_verdict_warning_with_a_dns_finding(dns, tmp_path):
    dns.set_dns(dkim=None)
    textfile = textfile_path(tmp_path)
    run, document = json_run(verdict_args(dns), textfile)
    assert run.returncode == 1 and document["state"] == "WARNING"
    assert document["summary"].startswith("dkim=") and not document["summary"].startswith("dkim=pass")
    states = {v["method"]: (v["result"] == "pass", v["state"]) for v in document["verdicts"]}
    assert states == {"spf": (True, "OK"), "dkim": (False, "WARNING"), "dmarc": (True, "OK")}
    assert document["dns_findings"] == ["DKIM key s2026._domainkey.example.test not published"]
    assert document["perfdata"]["dns_findings"]["value"] == 1 and document["error"] is None
    metrics = Textfile(textfile)
    assert metrics.value("email_roundtrip_state") == 1
    dkim = [labels for labels in metrics.of("email_roundtrip_auth_verdict") if ("method", "dkim") in labels]
    assert len(dkim) == 1 and ("result", "pass") not in dkim[0]


def test_dmarc_fail_is_a_critical_verdict(dns, tmp_path):
    dns.set_dns(spf="v=spf1 ip4:192.0.2.1 -all", dkim=None)
    textfile = textfile_path(tmp_path)
    run, document = json_run(verdict_args(dns), textfile)
    assert run.returncode == 2 and document["summary"].startswith("dmarc=fail (p=quarantine")
    dmarc = document["verdicts"][2]
    assert (dmarc["method"], dmarc["result"], dmarc["state"]) == ("dmarc", "fail", "CRITICAL")
    assert dmarc["line"] == document["summary"] and dmarc["reason"].startswith("p=quarantine")
    assert Textfile(textfile).value("email_roundtrip_auth_verdict", method="dmarc", result="fail") == 1


def test_timeout_is_unknown_and_still_written(stack, tmp_path, held_queue):
    textfile = textfile_path(tmp_path)
    args = implicit_tls_args(stack, "probe", "--to", "probe+hold@example.test", "--wait", "30", "-t", "3")
    run, document = json_run(args, textfile, *state_file(tmp_path))
    assert run.returncode == 3 and document["state"] == "UNKNOWN" and run.seconds < 4
    assert document["summary"] == document["stopped"] == "timeout: -t 3 s reached during waiting for delivery"
    assert document["error"] is None and document["roundtrip"] is None
    assert document["pending"] == 1  # this run's probe, for a later run to find
    metrics = Textfile(textfile, recipient="probe+hold@example.test")
    assert metrics.value("email_roundtrip_state") == 3 and metrics.value("email_roundtrip_success") == 0


def test_a_textfile_that_cannot_be_written_is_a_warning_and_the_output_still_comes(stack, tmp_path):
    missing = tmp_path / "no-such-directory" / "mail.prom"
    args = implicit_tls_args(stack, "probe", "--mode", "submit")
    run, document = json_run(args, missing)
    assert run.returncode == 1 and document["state"] == "WARNING" and document["mode"] == "submit"
    assert document["summary"] == f"cannot write --prometheus-textfile {missing}: No such file or directory"
    assert document["roundtrip"] is None and "roundtrip" not in document["phases"]
    assert set(document["phases"]) == {"smtp_connect", "smtp_auth", "smtp_submit", "smtp_total"}
    assert (document["late"], document["lost"], document["pending"]) == (None, None, None)  # no memory
    assert not missing.parent.exists()  # never created
    # the Nagios text likewise, with the perfdata
    run = run_plugin(*args, "--prometheus-textfile", str(tmp_path))
    assert run.returncode == 3  # a directory, not a .prom file: a usage error
    taken = tmp_path / "taken.prom"
    taken.mkdir()
    run = run_plugin(*args, "--prometheus-textfile", str(taken))
    assert run.returncode == 1, run.describe()
    reason = f"cannot write --prometheus-textfile {taken}: Is a directory"
    assert run.first_line.split(" | ")[0] == f"EMAIL_ROUNDTRIP WARNING - {reason}"
    assert "smtp_total" in run.perfdata and run.stderr == ""
