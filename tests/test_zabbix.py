"""The Zabbix template in a real Zabbix 6.0: imported through the API, run by
the real zabbix_server as an external check against the real mail stack,
its dependent items and triggers read back through the API.

tests/monitoring/zabbix.py starts PostgreSQL, zabbix_server and the API
privately (installing Debian's packages when missing).  Every host gets the
template's defaults except what points it at the stack: host name, ports,
user, password file, CA file, state directory.  All checks are asked for at
once (one poller each), so the one that Zabbix kills at its 30 s Timeout
costs no more than itself.
"""

import json
import socket
import time

import pytest
from mailstack import IMAPS_PORT, SUBMISSION_PORT
from monitoring.zabbix import FLOAT, ITEM_TIMEOUT, ZabbixInstance, template_generator

GEN = template_generator()
MASTER = GEN.master_key()
STATE = "email.state"


class Host:
    def __init__(self, zabbix, name, macros):
        self.zabbix = zabbix
        self.name = name
        self.id = zabbix.create_host(name, GEN.TEMPLATE, macros)
        self.master_id = zabbix.item(self.id, MASTER)["itemid"]
        self.asked = None  # a check now asked for and not waited for yet
        self.runs = []  # (master item after the run, seconds from check now to value)

    def item(self, key):
        return self.zabbix.item(self.id, key)

    def items(self):
        return self.zabbix.items(self.id)

    def ask(self):
        """Check now, without waiting: run() waits for it."""
        self.asked = (self.zabbix.snapshot(self.master_id), time.monotonic())
        self.zabbix.check_now(self.master_id)

    def run(self, timeout=90.0, retry_after=10.0):
        """Check now (or wait for the one asked for); the master item once it
        has something new, and the dependent state item once it followed.
        The seconds are from the check now to the master's value."""
        asked, self.asked = self.asked, None
        master, seconds = self.zabbix.run_now(
            self.master_id, timeout=timeout, retry_after=retry_after, asked_since=asked
        )
        self.runs.append((master, seconds))
        if master["state"] == "0":
            self.zabbix.wait_for_item(self.id, STATE, master["lastclock"])
        return master

    def json(self):
        master = self.runs[-1][0]
        assert master["state"] == "0", self.describe()
        return json.loads(master["lastvalue"])

    def value(self, key):
        """The item's last value, None when it has none."""
        item = self.item(key)
        return item["lastvalue"] if item["lastclock"] != "0" else None

    def problems(self):
        return sorted(
            name for name, trigger in self.zabbix.triggers(self.id).items() if trigger["value"] == "1"
        )

    def describe(self):
        lines = [f"host {self.name}:"]
        for master, seconds in self.runs:
            lines.append(
                f"  run after {seconds:.1f} s: state {master['state']} {master['error']!r} "
                f"{master['lastvalue'][:1500]}"
            )
        for key, item in sorted(self.items().items()):
            if key != MASTER:
                lines.append(
                    f"  {key} = {item['lastvalue'][:200]!r} (clock {item['lastclock']}, "
                    f"state {item['state']}, {item['error'][:200]!r})"
                )
        lines.append(f"  problems: {self.problems()}")
        return "\n".join(lines) + "\n" + self.zabbix.logs(15)


@pytest.fixture(scope="module")
def silent_port():
    """A loopback port that accepts connections (the kernel's backlog) and
    never says a word: an SMTP server that hangs before its greeting."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture(scope="module")
def zabbix():
    instance = ZabbixInstance()
    instance.start()
    print(
        f"Zabbix up in {instance.timings['start']:.1f} s ({instance.timings}), server runs as {instance.user}"
    )
    try:
        yield instance
    finally:
        left = instance.stop()
        assert left == [], f"processes still alive after stop: {left}"


@pytest.fixture(scope="module")
def hosts(zabbix, stack, silent_port):
    """The template imported, four hosts linked to it, each master item's
    first run asked for at once; {name: Host}."""
    imported = zabbix.import_template(GEN.template_yaml())
    assert imported is True, imported
    password = zabbix.write_secret("probe.password", stack.password("probe") + "\n")
    wrong = zabbix.write_secret("wrong.password", "not-the-password\n")
    noauth = zabbix.write_secret("noauth.password", stack.password("noauth") + "\n")
    stack_macros = {
        "{$EMAIL.HOST}": "localhost",
        "{$EMAIL.SMTP.PORT}": SUBMISSION_PORT,
        "{$EMAIL.IMAP.PORT}": IMAPS_PORT,
        "{$EMAIL.USER}": stack.address("probe"),
        "{$EMAIL.PASSWORD.FILE}": password,
        "{$EMAIL.CA.FILE}": stack.ca,
        "{$EMAIL.STATE.DIR}": zabbix.path("state"),
        # the tests ask for every run: no scheduled one in between (the
        # first would come at a random point of the first interval)
        "{$EMAIL.INTERVAL}": "1d",
    }
    plans = {
        # -t above the server's Timeout, against a server that never answers
        "killed": {
            **stack_macros,
            "{$EMAIL.SMTP.PORT}": silent_port,
            "{$EMAIL.TIMEOUT}": ITEM_TIMEOUT + 10,
            "{$EMAIL.STEP.TIMEOUT}": ITEM_TIMEOUT + 10,
            "{$EMAIL.NODATA}": "30s",
        },
        "nowait": stack_macros,
        "waiting": {
            **stack_macros,
            "{$EMAIL.WAIT.MODE}": "--wait=15",
            "{$EMAIL.RT.WARN}": 10,
            "{$EMAIL.RT.CRIT}": 14,
        },
        "badpassword": {**stack_macros, "{$EMAIL.PASSWORD.FILE}": wrong},
        # the stack's user whose SMTP AUTH is refused while IMAP LOGIN works
        "noauth": {
            **stack_macros,
            "{$EMAIL.USER}": stack.address("noauth"),
            "{$EMAIL.PASSWORD.FILE}": noauth,
        },
    }
    started = time.monotonic()
    made = {name: Host(zabbix, f"mailstack-{name}", macros) for name, macros in plans.items()}
    zabbix.reload_config_cache()
    time.sleep(1)  # a check now for an item not in the cache yet is dropped (run() asks again)
    for host in made.values():
        host.ask()
    print(f"import and hosts: {time.monotonic() - started:.1f} s")
    return made


@pytest.fixture(scope="module")
def nowait(hosts):
    """Two runs: the first has nothing to judge, the second judges the first's probe."""
    host = hosts["nowait"]
    first = host.run()
    assert first["state"] == "0", host.describe()
    first_json, first_values = host.json(), {key: host.value(key) for key in host.items()}
    for _ in range(3):  # the next run judges; a run that overlapped the first may not have
        host.run()
        if host.json()["roundtrip"] is not None:
            break
    print(
        f"first values after {host.runs[0][1]:.1f} s, then runs after "
        + ", ".join(f"{seconds:.1f} s" for _, seconds in host.runs[1:])
    )
    return host, first_json, first_values


def test_the_template_is_imported_whole(zabbix, hosts):
    found = zabbix.call(
        "template.get",
        {
            "filter": {"host": [GEN.TEMPLATE]},
            "output": ["host"],
            "selectItems": ["key_"],
            "selectTriggers": ["description"],
            "selectMacros": ["macro", "type"],
            "selectValueMaps": ["name"],
        },
    )
    assert len(found) == 1, found
    template = found[0]
    assert {item["key_"] for item in template["items"]} == {MASTER} | {item.key for item in GEN.items()}
    assert {macro["macro"] for macro in template["macros"]} == {macro.name for macro in GEN.macros()}
    expected_triggers = {t["name"] for ts in GEN.triggers_of_items().values() for t in ts}
    assert {t["description"] for t in template["triggers"]} == expected_triggers | {
        GEN.nodata_trigger()["name"]
    }
    assert [v["name"] for v in template["valuemaps"]] == [GEN.STATE_VALUEMAP]


def test_first_nowait_run_stores_what_it_has_and_discards_what_it_has_not(nowait):
    host, document, values = nowait
    why = host.describe()
    assert document["version"] == 1, why
    assert document["state"] == "OK" and document["summary"].startswith("first run"), why
    assert values[STATE] == "0", why
    assert values["email.summary"] == document["summary"], why
    # nothing judged yet: the null round trip and the absent verdicts store nothing
    assert values["email.roundtrip"] is None, why
    for method in GEN.verdict_methods():
        assert values[f"email.verdict[{method}]"] is None, why
    assert float(values["email.phase[smtp_connect]"]) > 0, why
    assert float(values["email.phase[smtp_total]"]) > 0, why
    assert values["email.phase[oauth_token]"] is None, why
    assert float(values["email.cert.days[smtp]"]) > 0, why
    assert float(values["email.cert.days[imap]"]) > 0, why
    assert values["email.pending"] == "1", why
    assert values["email.error.phase"] == "none", why
    assert values["email.error.reason"] == "none", why
    assert values["email.error.server_text"] == "none", why
    assert values["email.error.code"] == "0", why
    assert values["email.dns.findings"] == "0", why


def test_second_nowait_run_judges_the_first_probe(nowait):
    host, _, _ = nowait
    why = host.describe()
    document = host.json()
    assert document["state"] == "OK" and document["roundtrip"] is not None, why
    assert host.value(STATE) == "0", why
    roundtrip = host.zabbix.history(host.item("email.roundtrip")["itemid"], FLOAT)
    assert roundtrip and float(roundtrip[0]["value"]) >= 0, why  # whole seconds: 0 on loopback
    for method in ("spf", "dkim", "dmarc"):
        assert host.value(f"email.verdict[{method}]") == "pass", why
    assert host.value("email.verdict[arc]") is None, why  # direct mail: no ARC
    assert host.problems() == [], why


def test_waiting_mode_measures_this_runs_message(hosts):
    host = hosts["waiting"]
    host.run()
    why = host.describe()
    assert host.value(STATE) == "0", why
    assert 0 < float(host.value("email.roundtrip")) < 10, why
    trusted = [hop["seconds"] for hop in host.json()["hops"] if hop["trusted"]]
    slowest = host.value("email.hops.slowest")
    assert (slowest is None) if not trusted else (float(slowest) == max(trusted)), why
    assert float(host.value("email.phase[imap_retrieval]")) > 0, why
    for method in ("spf", "dkim", "dmarc"):
        assert host.value(f"email.verdict[{method}]") == "pass", why
    assert host.problems() == [], why


def test_a_wrong_password_is_critical_naming_imap_login(hosts, zabbix):
    """The probe logs in to IMAP first (UIDNEXT before it sends): a wrong
    password is refused there."""
    host = hosts["badpassword"]
    host.run()
    why = host.describe()
    assert host.json()["exit_code"] == 2, why
    assert host.value(STATE) == "2", why
    assert host.value("email.error.phase") == "IMAP LOGIN", why
    assert "AUTHENTICATIONFAILED" in host.value("email.error.server_text"), why
    assert host.value("email.error.code") == "0", why  # IMAP has no reply codes
    assert host.value("email.summary").startswith("IMAP LOGIN rejected"), why
    zabbix.wait_for_trigger(host.id, "Email round trip is CRITICAL", timeout=30)
    assert host.problems() == ["Email round trip is CRITICAL"], why


def test_smtp_auth_refused_is_critical_with_the_reply_code(hosts, zabbix):
    host = hosts["noauth"]
    host.run()
    why = host.describe()
    assert host.value(STATE) == "2", why
    assert host.value("email.error.phase") == "SMTP AUTH", why
    assert host.value("email.error.code") == "535", why
    assert host.value("email.error.server_text").startswith("5.7.8"), why
    assert host.value("email.summary").startswith("SMTP AUTH rejected: 535 5.7.8"), why
    assert float(host.value("email.phase[smtp_connect]")) > 0, why
    assert host.value("email.phase[smtp_submit]") is None, why
    zabbix.wait_for_trigger(host.id, "Email round trip is CRITICAL", timeout=30)
    assert host.problems() == ["Email round trip is CRITICAL"], why


def test_a_check_zabbix_kills_gives_nothing_but_the_nodata_trigger_fires(hosts, zabbix, stack):
    """The pitfall the template's nodata trigger is for: at Timeout the
    server kills the plugin, the master item turns unsupported, and its
    dependent items get nothing (so the state triggers cannot fire)."""
    host = hosts["killed"]
    master = host.run(timeout=ITEM_TIMEOUT + 60, retry_after=15)
    why = host.describe()
    assert master["state"] == "1", why
    assert "Timeout while executing a shell script" in master["error"], why
    assert host.runs[-1][1] >= ITEM_TIMEOUT - 1, why  # killed at the Timeout, not before
    for key, item in host.items().items():
        if key != MASTER:
            assert item["lastclock"] == "0" and item["state"] == "0", why
    zabbix.wait_for_trigger(host.id, "Email round trip: no result for 30s", timeout=90)
    assert host.problems() == ["Email round trip: no result for 30s"], why
    # the command line Zabbix logs names the password file, never the password
    commands = [
        line for line in open(zabbix.server_log, errors="replace") if "Failed to execute command" in line
    ]
    assert commands and "--smtp-password-file" in commands[-1], why
    assert stack.password("probe") not in "".join(commands), why
