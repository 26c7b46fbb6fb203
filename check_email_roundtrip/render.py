"""What a run decided, and the renderers that print it.

:class:`Report` is the end of the evaluation: the state, the first line's
reason, the lines below it, the perfdata, and the facts they came from.
Renderers turn a report into output; the Nagios plugin text is one of them
(:func:`nagios_text`), and another format is another function here, not a
change to the probe or the evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from nagiosplugin.state import ServiceState

    from .facts import ProbeResult
    from .memory import Remembered

SERVICE = "EMAIL_ROUNDTRIP"
# Nagios and Sensu split the output at the first "|": it may appear once,
# before the perfdata, and never in text.
_PIPE_STANDIN = "\u00a6"  # broken bar


class Report(NamedTuple):
    state: ServiceState
    summary: str  # the first line's reason
    details: tuple[str, ...]  # the lines below it
    perfdata: tuple[str, ...]  # "label=value[uom];warn;crit;min;max", sorted
    result: ProbeResult | None = None
    memory: Remembered | None = None

    @property
    def exit_code(self) -> int:
        return int(self.state)


def one_line(text: Any) -> str:
    """Printable text on one line: line breaks become spaces, other control
    characters a visible escape, and "|" its stand-in."""
    out = []
    for char in str(text):
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
    perfdata = " ".join(report.perfdata)
    if verbose == 0 and not below:
        return f"{status} | {perfdata}\n" if perfdata else f"{status}\n"
    lines = [status, *below] + ([f"| {perfdata}"] if perfdata else [])
    return "\n".join(lines) + "\n"
