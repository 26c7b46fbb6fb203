"""What a run decided, and the renderers that print it.

:class:`Report` is the end of the evaluation: the state, the first line's
reason, the lines below it, the perfdata, what was judged of each fact, and
the facts themselves.  Renderers turn a report into output: the Nagios
plugin text (:func:`nagios_text`) and one JSON object (:func:`json_text`,
``--output json``); another format is another function here, not a change
to the probe or the evaluation.  Imports nothing outside the standard
library at run time: a run that cannot load its dependencies still answers
in the format asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

    from nagiosplugin.performance import Performance
    from nagiosplugin.state import ServiceState

    from .facts import ProbeResult
    from .memory import Remembered

SERVICE = "EMAIL_ROUNDTRIP"
PLUGIN = "check_email_roundtrip"
# Nagios and Sensu split the output at the first "|": it may appear once,
# before the perfdata, and never in text.
_PIPE_STANDIN = "\u00a6"  # broken bar


class Finding(Record):
    """One fact as the evaluation judged it: the metric's name and context,
    its state, the words for it (as the Nagios text prints them), its value."""

    name: str  # "auth_dmarc", "smtp_cert_days", "roundtrip"
    context: str  # "verdict", "cert_days", ...
    state: ServiceState
    text: str
    value: Any


class Report(Record):
    state: ServiceState
    summary: str  # the first line's reason
    details: tuple[str, ...]  # the lines below it
    perfdata: tuple[Performance, ...]  # label, value, uom, warn, crit, min, max; str(): Nagios' form
    result: ProbeResult | None = None
    memory: Remembered | None = None
    findings: tuple[Finding, ...] = ()  # in the order the facts were judged
    mode: str | None = None  # roundtrip, submit, poll
    started_at: float | None = None  # time.time() when the run started

    @property
    def exit_code(self) -> int:
        return int(self.state)

    def finding(self, name: str) -> Finding | None:
        return next((finding for finding in self.findings if finding.name == name), None)

    def with_problem(self, state: ServiceState, text: str) -> Report:
        """The same run with one more problem found after the evaluation (a
        file that could not be written): the first line names the worst."""
        if not int(self.state):  # the only problem
            return self._replace(state=state, summary=text)
        # more than one: each gets a line below the status line
        below = self.details if self.summary in self.details else (*self.details, self.summary)
        worse = state > self.state
        return self._replace(
            state=state if worse else self.state,
            summary=text if worse else self.summary,
            details=(*below, text),
        )


def one_line(text: Any) -> str:
    """Printable text on one line: line breaks become spaces, other control
    characters a visible escape, and "|" its stand-in."""
    line = str(text)
    if line.isprintable() and "|" not in line:  # nearly every line: no walk over its characters
        return line
    out = []
    for char in line:
        if char in "\r\n\t\v\f\x85\u2028\u2029":
            out.append(" ")
        elif char == "|":
            out.append(_PIPE_STANDIN)
        elif not char.isprintable():
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def nagios_text(report: Report, verbose: int, log_lines: Sequence[str] = ()) -> str:
    """The plugin output (status line, long output, perfdata) per the
    Monitoring Plugins guidelines.  With nothing below the status line the
    perfdata rides on it after " | "; otherwise it is the last line."""
    status = f"{SERVICE} {str(report.state).upper()}"
    summary = one_line(report.summary)
    status += f" - {summary}" if summary else ""
    below = [one_line(line) for line in (*report.details, *log_lines)]
    perfdata = " ".join(str(performance) for performance in report.perfdata)
    if verbose == 0 and not below:
        return f"{status} | {perfdata}\n" if perfdata else f"{status}\n"
    lines = [status, *below] + ([f"| {perfdata}"] if perfdata else [])
    return "\n".join(lines) + "\n"


# -- --output json -----------------------------------------------------------------------------
# The JSON object's version: a consumer (a Zabbix template's JSONPath items)
# relies on every key of version 1 being there; a key is only ever added, and
# a change of meaning is a new version.  output-schema.json describes it.
JSON_VERSION = 1


def iso_utc(when: float | datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, to the millisecond: 2026-12-02T03:10:02.125Z."""
    if when is None:
        return None
    if isinstance(when, datetime):
        moment = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    else:
        moment = datetime.fromtimestamp(when, timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_document(
    state: str,
    exit_code: int,
    summary: str,
    details: Sequence[str] = (),
    started_at: float | None = None,
    log_lines: Sequence[str] = (),
) -> dict[str, Any]:
    """Every key of the JSON output, empty or null: what a run that ended
    before any probe (bad options, a missing module) prints, and what a
    report fills in."""
    from . import __version__

    return {
        "version": JSON_VERSION,
        "plugin": PLUGIN,
        "plugin_version": __version__,
        "mode": None,
        "state": state,
        "exit_code": exit_code,
        "summary": one_line(summary),
        "details": [one_line(line) for line in details],
        "log": [one_line(line) for line in log_lines],
        "time": iso_utc(started_at),
        "roundtrip": None,
        "phases": {},
        "perfdata": {},
        "verdicts": [],
        "dns_findings": [],
        "hops": [],
        "certificates": {},
        "late": None,
        "lost": None,
        "pending": None,
        "error": None,
        "stopped": None,
    }


def dump_json(document: dict[str, Any]) -> str:
    """One line, ASCII only (any other character escaped): no reader can
    split it or mistake its encoding."""
    import json

    return json.dumps(document, ensure_ascii=True, allow_nan=False, separators=(", ", ": ")) + "\n"


def _number(value: Any) -> Any:
    """A perfdata field as JSON: a number, or null when it is empty."""
    if value == "" or value is None:
        return None
    return value if isinstance(value, (int, float)) else float(value)


def _perfdata(performance: Performance) -> dict[str, Any]:
    return {
        "value": _number(performance.value),
        "uom": performance.uom,
        "warning": str(performance.warn) or None,
        "critical": str(performance.crit) or None,
        "min": _number(performance.min),
        "max": _number(performance.max),
    }


def _verdicts(report: Report) -> list[dict[str, Any]]:
    """Each verdict the text prints a line for, with the state it was given."""
    verdicts = []
    for finding in report.findings:
        if finding.context != "verdict":
            continue
        verdict = finding.value
        words = ", ".join(verdict.details)
        verdicts.append(
            {
                "method": verdict.method,
                "result": verdict.result,
                "reason": one_line(words) if words else None,
                "state": str(finding.state).upper(),
                "line": one_line(finding.text),
            }
        )
    return verdicts


def _certificates(report: Report) -> dict[str, Any]:
    certificates = {}
    for finding in report.findings:
        if finding.context == "cert_days":
            certificate = finding.value
            certificates[finding.name.split("_", 1)[0]] = {
                "days": round(certificate.days, 2),
                "not_after": iso_utc(certificate.not_after),
                "names": one_line(certificate.names),
            }
    return certificates


def _error(result: Any) -> dict[str, Any] | None:
    """Why the probe could not go on: a server's refusal or a failure on the
    way (ProbeError), one on our side (LocalError), a bounce (the remote
    server's reply), or no message within --wait."""
    from .errors import Phase, ProbeError
    from .mask import mask

    error, bounced = result.error, getattr(result, "bounced", None)
    code: int | None = None
    if isinstance(error, ProbeError):
        phase, reason, code, server_text = error.phase, error.reason, error.code, error.server_text
    elif error is not None:  # LocalError: our side (a token command, a token file)
        phase, reason, server_text = error.phase, error.text, ""
    elif bounced is not None:
        bounce = bounced.bounce
        reply, _, rest = bounce.diagnostic.partition(" ")
        code = int(reply) if len(reply) == 3 and reply.isdigit() else None
        server_text = mask(rest if code is not None else bounce.diagnostic)
        recipient = f", {bounce.recipient}" if bounce.recipient else ""
        phase, reason = (
            Phase.DELIVERY,
            f"bounced after {bounced.after:.1f} s (status {bounce.status}{recipient})",
        )
    elif getattr(result, "not_delivered_within", None) is not None:
        phase, reason, server_text = (
            Phase.DELIVERY,
            f"not delivered within {result.not_delivered_within:g} s",
            "",
        )
    else:
        return None
    return {
        "phase": str(phase),
        "code": code,
        "reason": one_line(reason),
        "server_text": one_line(server_text) if server_text else None,
    }


def _hops(result: Any) -> list[dict[str, Any]]:
    arrival = getattr(result, "arrival", None)
    return [
        {
            "by": one_line(hop.by),
            "protocol": one_line(hop.protocol),
            "stamped": iso_utc(hop.stamped),
            "seconds": round(hop.seconds, 3),
            "skewed": hop.skewed,
            "trusted": hop.trusted,
        }
        for hop in (arrival.hops if arrival is not None else ())
    ]


def json_text(report: Report, verbose: int, log_lines: Sequence[str] = ()) -> str:
    """The run as one JSON object on one line (schema: output-schema.json).
    The -v log lines go to "log", never into "details"."""
    document = json_document(
        str(report.state).upper(),
        report.exit_code,
        report.summary,
        report.details,
        report.started_at,
        log_lines,
    )
    document["mode"] = report.mode
    perfdata = {performance.label: _perfdata(performance) for performance in report.perfdata}
    document["perfdata"] = perfdata
    # the timings (hop_max is a delay the message carried, under "hops")
    document["phases"] = {
        label: item["value"] for label, item in perfdata.items() if item["uom"] == "s" and label != "hop_max"
    }
    result = report.result
    if result is not None:
        roundtrip = perfdata.get("roundtrip")
        document["roundtrip"] = roundtrip["value"] if roundtrip else None
        dns = getattr(result, "dns", None)
        document["dns_findings"] = [one_line(finding) for finding in dns.findings] if dns else []
        document["hops"] = _hops(result)
        document["error"] = _error(result)
        document["stopped"] = one_line(result.stopped) if result.stopped is not None else None
    document["verdicts"] = _verdicts(report)
    document["certificates"] = _certificates(report)
    memory = report.memory
    if memory is not None and memory.usable:
        document.update(late=memory.late, lost=memory.lost, pending=memory.pending)
    return dump_json(document)


# The renderer of each --output value.
RENDERERS: dict[str, Callable[[Report, int, Sequence[str]], str]] = {"text": nagios_text, "json": json_text}


def requested_format(argv: Sequence[str], long_options: Sequence[str] = ()) -> str:
    """The --output that argv asks for, read before the options are known to
    be good, so that a usage error is said in that format too.  As argparse
    reads it: the last one wins, ``--output json`` and ``--output=json``, a
    prefix only where it names --output alone among ``long_options`` (none
    given: the full name only), nothing after ``--``; otherwise text."""
    chosen = "text"
    words = list(argv)
    for position, word in enumerate(words):
        if word == "--":
            break
        name, equals, value = word.partition("=")
        if not name.startswith("--") or len(name) < 3:
            continue
        if name != "--output" and [option for option in long_options if option.startswith(name)] != [
            "--output"
        ]:
            continue
        if not equals:
            value = words[position + 1] if position + 1 < len(words) else ""
        chosen = value if value in RENDERERS else chosen
    return chosen
