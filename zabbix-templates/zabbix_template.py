"""The Zabbix template as data: its macros (from the plugin's option table),
its items (from the perfdata labels and verdict methods), triggers and value
map; generate.py writes it as YAML and README.md.  The design is in
generate.py's docstring and README.md."""


from __future__ import annotations

import hashlib
import os
import sys
import uuid
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from check_email_roundtrip.check import PERFDATA, SECONDS_LABELS  # noqa: E402
from check_email_roundtrip.options import all_options  # noqa: E402
from check_email_roundtrip.policy import METHODS, NOT_EVALUATED  # noqa: E402
from check_email_roundtrip.render import JSON_VERSION  # noqa: E402

TEMPLATE = "check_email_roundtrip"  # the technical name, what triggers reference
TEMPLATE_NAME = "Email round trip (check_email_roundtrip)"
GROUP = "Templates/Applications"
PLUGIN = "check_email_roundtrip"
# Zabbix 6.0 kills an external check after the server's Timeout (at most 30 s,
# 3 s by default in zabbix_server.conf: raise it).  The plugin's own -t stays
# below it, so that a hang is reported by the plugin with its stage.
SERVER_TIMEOUT = 30
STATE_VALUEMAP = "check_email_roundtrip state"
STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


class Macro(NamedTuple):
    name: str
    default: str
    description: str


class Param(NamedTuple):
    """Key words for one option: ``option`` (None: the value is an option
    word itself) followed by ``value``, which names the macros."""

    option: str | None
    value: str
    macros: tuple[Macro, ...]


def _help(long_option: str) -> str:
    for option in all_options():
        if option.long == long_option:
            return " ".join(option.help.split())
    raise KeyError(long_option)


def _macro(name: str, option: str, default: str, note: str = "") -> Macro:
    text = f"{option}: {_help(option)}."
    return Macro(name, default, f"{text} {note}".strip())


def params() -> list[Param]:
    """The master item's key, option by option, with the macros that fill it."""
    host = _macro("{$EMAIL.HOST}", "--hostname", "mail.example.com")
    state_dir = Macro(
        "{$EMAIL.STATE.DIR}",
        "/var/lib/zabbix/check_email_roundtrip",
        f"--state-file: {_help('--state-file')}. Here the directory: the file is <dir>/<host name>.json. "
        "It must be writable by the zabbix user: its home is not, and --no-wait needs the memory.",
    )
    cert_warn = Macro(
        "{$EMAIL.CERT.WARN}",
        "21",
        f"--cert-days WARN: {_help('--cert-days')}. Also the threshold of the certificate trigger.",
    )
    cert_crit = Macro("{$EMAIL.CERT.CRIT}", "7", "--cert-days CRIT: see {$EMAIL.CERT.WARN}.")
    wait = Macro(
        "{$EMAIL.WAIT.MODE}",
        "--no-wait",
        f"--no-wait: {_help('--no-wait')}. One word: --no-wait (recommended: Zabbix kills the check after "
        f"its Timeout, at most {SERVER_TIMEOUT} s), or --wait=SECONDS to wait for this run's message "
        "(then keep {$EMAIL.RT.CRIT} below SECONDS and SECONDS well below {$EMAIL.TIMEOUT}).",
    )
    return [
        Param("--output", "json", ()),
        Param("--hostname", host.name, (host,)),
        Param("--smtp-port", "{$EMAIL.SMTP.PORT}", (_macro("{$EMAIL.SMTP.PORT}", "--smtp-port", "587"),)),
        Param(
            "--smtp-security",
            "{$EMAIL.SMTP.SECURITY}",
            (_macro("{$EMAIL.SMTP.SECURITY}", "--smtp-security", "starttls"),),
        ),
        Param("--imap-port", "{$EMAIL.IMAP.PORT}", (_macro("{$EMAIL.IMAP.PORT}", "--imap-port", "993"),)),
        Param(
            "--imap-security",
            "{$EMAIL.IMAP.SECURITY}",
            (_macro("{$EMAIL.IMAP.SECURITY}", "--imap-security", "tls"),),
        ),
        Param("--smtp-user", "{$EMAIL.USER}", (_macro("{$EMAIL.USER}", "--smtp-user", "probe@example.com"),)),
        Param(
            "--smtp-password-file",
            "{$EMAIL.PASSWORD.FILE}",
            (
                _macro(
                    "{$EMAIL.PASSWORD.FILE}",
                    "--smtp-password-file",
                    "/etc/zabbix/check_email_roundtrip/probe.password",
                    "Readable by the zabbix user only (0600). The IMAP login uses the same user and "
                    "password. A path, never the password: Zabbix puts key parameters on the command line.",
                ),
            ),
        ),
        Param(
            "--ca-file",
            "{$EMAIL.CA.FILE}",
            (
                _macro(
                    "{$EMAIL.CA.FILE}",
                    "--ca-file",
                    "/etc/ssl/certs/ca-certificates.crt",
                    "The default is Debian's system bundle again, which changes nothing.",
                ),
            ),
        ),
        Param("--imap-folder", "{$EMAIL.FOLDER}", (_macro("{$EMAIL.FOLDER}", "--imap-folder", "INBOX"),)),
        Param("--warning", "{$EMAIL.RT.WARN}", (_macro("{$EMAIL.RT.WARN}", "--warning", "60"),)),
        Param("--critical", "{$EMAIL.RT.CRIT}", (_macro("{$EMAIL.RT.CRIT}", "--critical", "300"),)),
        Param(None, wait.name, (wait,)),
        Param(
            "--timeout",
            "{$EMAIL.TIMEOUT}",
            (
                _macro(
                    "{$EMAIL.TIMEOUT}",
                    "--timeout",
                    "25",
                    f"Keep it below the server's Timeout (at most {SERVER_TIMEOUT} s in Zabbix 6.0): a check "
                    "Zabbix kills gives the dependent items nothing.",
                ),
            ),
        ),
        Param(
            "--step-timeout",
            "{$EMAIL.STEP.TIMEOUT}",
            (_macro("{$EMAIL.STEP.TIMEOUT}", "--step-timeout", "10"),),
        ),
        Param("--cert-days", f"{cert_warn.name},{cert_crit.name}", (cert_warn, cert_crit)),
        Param("--state-file", state_dir.name + "/{HOST.HOST}.json", (state_dir,)),
        Param(
            "--lost-after", "{$EMAIL.LOST.AFTER}", (_macro("{$EMAIL.LOST.AFTER}", "--lost-after", "86400"),)
        ),
        Param(
            "--purge-older-than",
            "{$EMAIL.PURGE.DAYS}",
            (
                _macro(
                    "{$EMAIL.PURGE.DAYS}",
                    "--purge-older-than",
                    "7",
                    "A run a minute leaves 1440 probe messages a day.",
                ),
            ),
        ),
    ]


# not options: the schedule
INTERVAL = Macro(
    "{$EMAIL.INTERVAL}",
    "1m",
    "How often the check runs. With --no-wait a run judges the probe the previous run sent: the news is "
    "one interval old, so run it at least every {$EMAIL.RT.WARN} seconds.",
)
NODATA = Macro(
    "{$EMAIL.NODATA}",
    "5m",
    "No result for this long fires the nodata trigger: a check Zabbix killed at its Timeout, or one that "
    "could not start, gives the dependent items (and so the state triggers) nothing. A few intervals.",
)


def key_words() -> list[str]:
    words = []
    for param in params():
        if param.option:
            words.append(param.option)
        words.append(param.value)
    return words


def master_key() -> str:
    return PLUGIN + "[" + ",".join(f'"{word}"' for word in key_words()) + "]"


def macros() -> list[Macro]:
    found = [macro for param in params() for macro in param.macros] + [INTERVAL, NODATA]
    return sorted(found, key=lambda macro: macro.name)


def _uuid(*names: str) -> str:
    """32 hex digits, a version-4 UUID as Zabbix wants, derived from names
    (the same names give the same UUID in every export)."""
    digest = hashlib.sha256("\0".join(("check_email_roundtrip", *names)).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4).hex


# -- dependent items ----------------------------------------------------------------------------------
class Item(NamedTuple):
    key: str
    name: str
    value_type: str  # FLOAT, CHAR, TEXT, UNSIGNED
    path: str  # JSONPath
    description: str
    units: str = ""
    on_missing: str = "DISCARD_VALUE"  # what an absent path stores; "" makes the item unsupported
    custom: str = ""  # on_missing CUSTOM_VALUE: the value
    valuemap: str = ""
    component: str = "email"
    not_null: bool = False  # the path may hold null: then the same as when it is absent
    within: str = ""  # a JSONPath that must match first (no error handler); path is then relative to it


def phase_labels() -> list[str]:
    return [label for label in SECONDS_LABELS if label not in ("roundtrip", "age")]


def verdict_methods() -> list[str]:
    return list(METHODS)


CERT_SERVERS = ("smtp", "imap")


def items() -> list[Item]:
    found = [
        Item(
            "email.state",
            "Email round trip: state",
            "UNSIGNED",
            "$.exit_code",
            "The plugin's state as its Nagios exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Output "
            "that is not the plugin's JSON (an error before it could print any) counts as UNKNOWN.",
            on_missing="CUSTOM_VALUE",
            custom="3",
            valuemap=STATE_VALUEMAP,
        ),
        Item(
            "email.summary",
            "Email round trip: summary",
            "TEXT",
            "$.summary",
            "The plugin's first line without its state word: the round trip, or what failed and the "
            "server's words.",
            on_missing="",
        ),
        Item(
            "email.roundtrip",
            "Email round trip: round trip",
            "FLOAT",
            "$.roundtrip",
            f"roundtrip: {PERFDATA['roundtrip']}. With --no-wait: of the probe judged in this run, from the "
            "server's delivery time (whole seconds). Nothing is stored when no probe was judged.",
            units="s",
            not_null=True,
        ),
    ]
    for label in phase_labels():
        found.append(
            Item(
                f"email.phase[{label}]",
                f"Email round trip: phase {label}",
                "FLOAT",
                f"$.phases.{label}",
                f"{label}: {PERFDATA[label]}. Nothing is stored when the phase did not run.",
                units="s",
            )
        )
    for method in verdict_methods():
        if method == "arc":  # a line of its own only when the receiver evaluated ARC
            unevaluated = (
                "nothing is stored when the receiver did not evaluate ARC (direct mail seldom has it)"
            )
        else:
            unevaluated = f"{NOT_EVALUATED} when the receiver did not evaluate it"
        found.append(
            Item(
                f"email.verdict[{method}]",
                f"Email round trip: {method.upper()} verdict",
                "CHAR",
                f'$.verdicts[?(@.method=="{method}")].result.first()',
                f"The receiver's {method.upper()} result for the probe (pass, fail, none, ...; from its "
                f"Authentication-Results header); {unevaluated}. Nothing is stored when no probe was judged "
                "in this run.",
                component="authentication",
            )
        )
    for server in CERT_SERVERS:
        label = f"{server}_cert_days"
        found.append(
            Item(
                f"email.cert.days[{server}]",
                f"Email round trip: {server.upper()} certificate days left",
                "FLOAT",
                f"$.certificates.{server}.days",
                f"{label}: {PERFDATA[label]}.",
                units="d",
                component="tls",
            )
        )
    for counter in ("late", "lost", "pending"):
        found.append(
            Item(
                f"email.{counter}",
                f"Email round trip: {counter} probes",
                "UNSIGNED",
                f"$.{counter}",
                f"{counter}: {PERFDATA[counter]}.",
                not_null=True,
            )
        )
    found += [
        Item(
            "email.dns.findings",
            "Email round trip: DNS findings",
            "UNSIGNED",
            "$.dns_findings.length()",
            f"dns_findings: {PERFDATA['dns_findings']}.",
            component="authentication",
        ),
        Item(
            "email.hops.slowest",
            "Email round trip: slowest hop",
            "FLOAT",
            # Zabbix 6.0 compares a JSON true with "true" (tested), not with true
            '$.hops[?(@.trusted == "true")].seconds.max()',
            "The longest time the judged probe spent before one hop of its Received chain that the "
            "receiving side wrote (a queue, greylisting, a content filter), like the plugin's hop_max. "
            "Nothing is stored when no probe was judged or no hop was read.",
            units="s",
        ),
        Item(
            "email.error.phase",
            "Email round trip: failed phase",
            "CHAR",
            "$.phase",
            'The phase that failed (for example "SMTP AUTH"), "none" when nothing failed (error is null).',
            on_missing="CUSTOM_VALUE",
            custom="none",
            within="$.error",
        ),
        Item(
            "email.error.reason",
            "Email round trip: failure",
            "TEXT",
            "$.reason",
            'Why the failed phase failed, in the plugin\'s words; "none" when nothing failed.',
            on_missing="CUSTOM_VALUE",
            custom="none",
            within="$.error",
        ),
        Item(
            "email.error.code",
            "Email round trip: failure reply code",
            "UNSIGNED",
            "$.code",
            "The server's reply code when it refused (535 for a refused SMTP AUTH); 0 when nothing failed "
            "or the reply had no code (IMAP).",
            on_missing="CUSTOM_VALUE",
            custom="0",
            not_null=True,
            within="$.error",
        ),
        Item(
            "email.error.server_text",
            "Email round trip: failure reply",
            "TEXT",
            "$.server_text",
            'What the server said when it refused (secrets masked); "none" when nothing failed.',
            on_missing="CUSTOM_VALUE",
            custom="none",
            within="$.error",
            not_null=True,
        ),
    ]
    return found


def _preprocessing(item: Item) -> list[dict]:
    steps: list[dict] = []
    if item.within:
        # output that is not the plugin's JSON fails here: unsupported, with the text
        steps.append({"type": "JSONPATH", "parameters": [item.within]})
    step: dict = {"type": "JSONPATH", "parameters": [item.path]}
    if item.on_missing:
        step["error_handler"] = item.on_missing
        if item.on_missing == "CUSTOM_VALUE":
            step["error_handler_params"] = item.custom
    steps.append(step)
    if item.not_null:
        # JSON null comes out as the text "null": treat it as absent, rather
        # than store "null" or have a number item made unsupported by it
        null: dict = {"type": "NOT_MATCHES_REGEX", "parameters": ["^null$"], "error_handler": item.on_missing}
        if item.on_missing == "CUSTOM_VALUE":
            null["error_handler_params"] = item.custom
        steps.append(null)
    return steps


def _dependent(item: Item) -> dict:
    out: dict = {
        "uuid": _uuid("item", item.key),
        "name": item.name,
        "type": "DEPENDENT",
        "key": item.key,
        "delay": "0",
        "history": "31d",
    }
    out["value_type"] = item.value_type  # the export's default is UNSIGNED
    if item.value_type in ("CHAR", "TEXT"):
        out["trends"] = "0"
    if item.units:
        out["units"] = item.units
    out["description"] = item.description
    if item.valuemap:
        out["valuemap"] = {"name": item.valuemap}
    out["preprocessing"] = _preprocessing(item)
    out["master_item"] = {"key": master_key()}
    out["tags"] = [{"tag": "component", "value": item.component}]
    return out


# -- triggers -----------------------------------------------------------------------------------------
def _ref(key: str) -> str:
    return f"/{TEMPLATE}/{key}"


def triggers_of_items() -> dict[str, list[dict]]:
    """Triggers by the item key they belong with (all single-item triggers)."""
    by_key: dict[str, list[dict]] = {}

    def add(key: str, name: str, expression: str, priority: str, description: str, **extra) -> None:
        trigger = {
            "uuid": _uuid("trigger", name),
            "expression": expression,
            "name": name,
        }
        trigger.update(extra)
        trigger["priority"] = priority
        trigger["description"] = description
        trigger["tags"] = [{"tag": "scope", "value": "availability"}]
        by_key.setdefault(key, []).append(trigger)

    state = _ref("email.state")
    for code, priority in ((3, "AVERAGE"), (2, "HIGH"), (1, "WARNING")):
        word = STATES[code]
        add(
            "email.state",
            f"Email round trip is {word}",
            f"last({state})={code}",
            priority,
            f"The plugin said {word}. Its summary item says why (the phase, the server's words); the "
            "master item holds the whole JSON.",
            opdata="{ITEM.LASTVALUE1}",
        )
    for method in verdict_methods():
        key = f"email.verdict[{method}]"
        if method == "arc":  # direct mail usually carries no ARC: only a failure means something
            expression, what = f'last({_ref(key)})="fail"', "fail"
        else:
            expression, what = f'last({_ref(key)})<>"pass"', "not pass"
        add(
            key,
            f"Email round trip: {method.upper()} verdict is {what}",
            expression,
            "WARNING",
            f"The receiver's {method.upper()} result for the probe is {{ITEM.LASTVALUE1}}. The plugin's "
            "--auth-policy decides what it does to the state; this trigger names the method.",
            opdata="{ITEM.LASTVALUE1}",
        )
    for server in CERT_SERVERS:
        key = f"email.cert.days[{server}]"
        for macro, priority in (("{$EMAIL.CERT.CRIT}", "HIGH"), ("{$EMAIL.CERT.WARN}", "WARNING")):
            add(
                key,
                f"Email round trip: {server.upper()} certificate expires in less than {macro} days",
                f"last({_ref(key)})<{macro}",
                priority,
                f"Days left on the {server.upper()} server's certificate, as seen by the probe's handshake.",
                opdata="{ITEM.LASTVALUE1}",
            )
    return by_key


def nodata_trigger() -> dict:
    name = "Email round trip: no result for {$EMAIL.NODATA}"
    return {
        "uuid": _uuid("trigger", "nodata"),
        "expression": f"nodata(/{TEMPLATE}/{master_key()},{{$EMAIL.NODATA}})=1",
        "name": name,
        "priority": "AVERAGE",
        "description": "The check gave no value: Zabbix killed it at its Timeout (the master item says "
        '"Timeout while executing a shell script"), or it could not be run (not in ExternalScripts, not '
        "executable). The dependent items, and so the state triggers, then keep their last values.",
        "tags": [{"tag": "scope", "value": "availability"}],
    }


def _dependencies(by_key: dict[str, list[dict]]) -> None:
    """Lower severities of one item depend on the higher: one problem shown."""
    for key, triggers in by_key.items():
        for lower, higher in zip(triggers[1:], triggers):
            if key == "email.state":
                continue  # one value: only one of them can fire at a time
            lower["dependencies"] = [{"name": higher["name"], "expression": higher["expression"]}]


def template() -> dict:
    by_key = triggers_of_items()
    _dependencies(by_key)
    master = {
        "uuid": _uuid("item", "master"),
        "name": "Email round trip: check_email_roundtrip JSON",
        "type": "EXTERNAL",
        "key": master_key(),
        "delay": "{$EMAIL.INTERVAL}",
        "history": "7d",
        "trends": "0",
        "value_type": "TEXT",
        "description": "Runs check_email_roundtrip (a symlink in the server's ExternalScripts directory) "
        f"with --output json: one JSON object (schema version {JSON_VERSION}) that the dependent items read. "
        f"The plugin's -t ({{$EMAIL.TIMEOUT}}) must stay below the server's Timeout (at most "
        f"{SERVER_TIMEOUT} s).",
        "tags": [{"tag": "component", "value": "email"}, {"tag": "component", "value": "raw"}],
        "triggers": [nodata_trigger()],
    }
    out_items = [master]
    for item in items():
        entry = _dependent(item)
        if item.key in by_key:
            entry["triggers"] = by_key[item.key]
        out_items.append(entry)
    return {
        "zabbix_export": {
            "version": "6.0",
            "groups": [{"uuid": _uuid("group", GROUP), "name": GROUP}],
            "templates": [
                {
                    "uuid": _uuid("template", TEMPLATE),
                    "template": TEMPLATE,
                    "name": TEMPLATE_NAME,
                    "description": "Proves that email arrives: check_email_roundtrip submits a probe over "
                    "SMTP and finds it in IMAP, as an external check with --output json. Generated by "
                    "zabbix-templates/generate.py; see zabbix-templates/README.md.",
                    "groups": [{"name": GROUP}],
                    "items": out_items,
                    "macros": [
                        {"macro": m.name, "value": m.default, "description": m.description} for m in macros()
                    ],
                    "valuemaps": [
                        {
                            "uuid": _uuid("valuemap", STATE_VALUEMAP),
                            "name": STATE_VALUEMAP,
                            "mappings": [
                                {"value": str(code), "newvalue": word} for code, word in enumerate(STATES)
                            ],
                        }
                    ],
                }
            ],
        }
    }
