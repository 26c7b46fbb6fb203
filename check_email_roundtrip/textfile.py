"""--prometheus-textfile: the run's metrics for node_exporter's textfile collector.

The Prometheus text exposition format: one HELP and one TYPE line per
family (the table :data:`FAMILIES`), names and units as Prometheus has them
(seconds, Unix timestamps, counters ending in ``_total``), label values
escaped.  Every sample carries the labels of the check (:func:`target_labels`):
``check`` is the file's name without ``.prom``, so that two checks sharing a
directory never write the same series (node_exporter refuses a directory
where two files do), and the others name the target.

Written atomically as every file of the plugin (``files.write_private``): a
new file in the same directory, renamed into place; node_exporter reads only
``*.prom``, never the temporary ``.*.tmp``.  Mode 0644, unlike the plugin's
private files (0600): node_exporter runs as a user of its own and must read
it, and it holds nothing secret (host names, addresses, states, seconds),
nothing that node_exporter would not serve on its /metrics page anyway.  The
directory is never created: a missing one is a mistyped path, a WARNING
naming it, and the run's output comes as ever.

The last success survives failing runs: it is read back from the file this
run replaces.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

from .check import SECONDS_LABELS
from .files import read_private, write_private
from .memory import EARLIEST
from .record import Record
from .render import Report
from .settings import Settings

TEXTFILE_MODE = 0o644  # node_exporter must read it (see above)
MAX_PREVIOUS_BYTES = 256 * 1024  # what is read back of the previous file
LAST_SUCCESS = "email_roundtrip_last_success_timestamp_seconds"


class Family(Record):
    name: str
    type: str  # gauge or counter
    help: str


# Every metric family, in the order written.
FAMILIES = (
    Family(
        "email_roundtrip_state", "gauge", "State of the last run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
    ),
    Family("email_roundtrip_success", "gauge", "1 when the last run was OK, else 0."),
    Family(LAST_SUCCESS, "gauge", "Unix time when the last OK run started, kept across failing runs."),
    Family("email_roundtrip_seconds", "gauge", "Round trip: from MAIL FROM until the message was found."),
    Family("email_roundtrip_phase_seconds", "gauge", "Seconds each phase of the last run took."),
    Family(
        "email_roundtrip_hop_max_seconds",
        "gauge",
        "Longest time between two stamps of the delivered message's Received chain.",
    ),
    Family("email_roundtrip_auth_verdict", "gauge", "The receiver's verdict: 1 for each method's result."),
    Family(
        "email_roundtrip_cert_expiry_timestamp_seconds",
        "gauge",
        "Unix time when the server's TLS certificate expires.",
    ),
    Family(
        "email_roundtrip_late_total", "counter", "Probes that arrived after --wait, found by a later run."
    ),
    Family("email_roundtrip_lost_total", "counter", "Probes still missing after --lost-after."),
)
# The perfdata labels that are phases: the round trip has a family of its
# own, and poll mode's age is no phase.
PHASES = tuple(label for label in SECONDS_LABELS if label not in ("roundtrip", "age"))

Sample = tuple[str, dict[str, str], float]  # family name, its own labels, value


def target_labels(settings: Settings, path: str) -> dict[str, str]:
    """What the check is: its file's name, mode and target (empty ones left out)."""
    name = os.path.basename(path)[: -len(".prom")]
    labels = {
        "check": name,
        "mode": str(settings.mode),
        "smtp_host": settings.smtp.host if settings.smtp else "",
        "imap_host": settings.imap.host if settings.imap else "",
        "mailbox": (settings.imap.user or "") if settings.imap else "",
        "recipient": settings.recipient or "",
    }
    return {key: value for key, value in labels.items() if value}


def samples(report: Report, last_success: float | None) -> Iterator[Sample]:
    yield "email_roundtrip_state", {}, report.exit_code
    yield "email_roundtrip_success", {}, 0 if report.exit_code else 1
    if not report.exit_code and report.started_at is not None:
        last_success = round(report.started_at, 3)
    if last_success is not None:
        yield LAST_SUCCESS, {}, last_success
    seconds = {p.label: p.value for p in report.perfdata if p.uom == "s"}
    if "roundtrip" in seconds:
        yield "email_roundtrip_seconds", {}, seconds["roundtrip"]
    for phase in PHASES:
        if phase in seconds:
            yield "email_roundtrip_phase_seconds", {"phase": phase}, seconds[phase]
    if "hop_max" in seconds:  # as in the Nagios perfdata: over the hops the receiver wrote
        yield "email_roundtrip_hop_max_seconds", {}, seconds["hop_max"]
    for finding in report.findings:
        if finding.context == "verdict":
            labels = {"method": finding.value.method, "result": finding.value.result}
            yield "email_roundtrip_auth_verdict", labels, 1
        elif finding.context == "cert_days":
            server = finding.name.split("_", 1)[0]
            expiry = finding.value.not_after.timestamp()
            yield "email_roundtrip_cert_expiry_timestamp_seconds", {"server": server}, expiry
    memory = report.memory
    if memory is not None and memory.usable:
        yield "email_roundtrip_late_total", {}, memory.late
        yield "email_roundtrip_lost_total", {}, memory.lost


def escape(value: str) -> str:
    """A label value as the exposition format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))


def exposition(report: Report, labels: dict[str, str], last_success: float | None) -> str:
    """The textfile's content."""
    found: dict[str, list[str]] = {}
    for name, own, value in samples(report, last_success):
        pairs = ",".join(f'{key}="{escape(text)}"' for key, text in {**labels, **own}.items())
        found.setdefault(name, []).append(f"{name}{{{pairs}}} {_number(value)}")
    lines = []
    for family in FAMILIES:
        if family.name in found:
            lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.type}"]
            lines += found[family.name]
    return "\n".join(lines) + "\n"


def previous_success(path: str) -> float | None:
    """The last success the file at ``path`` holds, if it is one of ours
    and says a believable time."""
    try:
        raw = read_private(path, MAX_PREVIOUS_BYTES)
    except OSError:
        return None
    for line in (raw or b"").decode("utf-8", "replace").splitlines():
        if line.startswith((LAST_SUCCESS + "{", LAST_SUCCESS + " ")):
            try:
                value = float(line.rsplit(None, 1)[-1])  # we write no sample timestamp
            except ValueError:
                continue
            if math.isfinite(value) and EARLIEST <= value <= time.time() + 86400:
                return value
    return None


def export(report: Report, settings: Settings, path: str) -> Report:
    """Write the textfile; a file that cannot be written is a WARNING naming it."""
    import logging

    from .output import LOGGER

    text = exposition(report, target_labels(settings, path), previous_success(path))
    try:
        write_private(path, text.encode("utf-8"), mode=TEXTFILE_MODE, make_directory=False)
    except OSError as exc:
        from nagiosplugin.state import Warn

        return report.with_problem(Warn, f"cannot write --prometheus-textfile {path}: {exc.strerror or exc}")
    logging.getLogger(LOGGER).info("Prometheus textfile %s written", path)
    return report
