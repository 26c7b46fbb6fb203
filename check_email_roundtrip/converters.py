"""Option values from text: each converter returns the value or raises
``argparse.ArgumentTypeError`` with the reason in the user's terms (which
argparse prefixes with the option's name)."""

from __future__ import annotations

import argparse
import enum
import math

import nagiosplugin

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any, Callable

# Longest duration any option takes (a year): beyond it a float still parses
# but time arithmetic overflows, and no check waits that long.
MAX_SECONDS = 366 * 86400.0
RANGE_EXAMPLES = "ranges look like 60, 10:, ~:60, 10:20 or @10:20"


def nagios_range(text: str) -> nagiosplugin.Range:
    """A Nagios range (``[@]start:end``, ``~`` for minus infinity), checked
    here so that a bad one is explained, not a Python message."""
    spec = text.strip()
    body = spec[1:] if spec.startswith("@") else spec
    start, sep, end = body.rpartition(":")
    if not body or (sep and not start.strip("~") and not end):
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: {RANGE_EXAMPLES}")
    for part in (start if start != "~" else "", end):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid range {text!r}: {part!r} is not a number ({RANGE_EXAMPLES})"
            ) from None
        if not math.isfinite(value) or abs(value) > MAX_SECONDS * 1000:
            raise argparse.ArgumentTypeError(f"invalid range {text!r}: {part!r} is out of bounds")
    try:
        return nagiosplugin.Range(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: {exc}") from None


def text(value: str) -> str:
    """Any text that is sent to a server or printed: one line of it.  CR or
    LF in an option would start a new command on the wire (or a new line of
    output that reads like a status line)."""
    bad = sorted({f"\\x{ord(char):02x}" for char in value if ord(char) < 0x20 or ord(char) == 0x7F})
    if bad:
        raise argparse.ArgumentTypeError(f"control characters ({', '.join(bad)}) are not allowed: {value!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is more than a year: {text!r}")
    return value


def days(text: str) -> float:
    value = seconds(text)
    if value * 86400 > MAX_SECONDS * 100:
        raise argparse.ArgumentTypeError(f"more days than the calendar can count back: {text!r}")
    return value


def whole_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1: {text!r}")
    return int(text)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {text!r}")
    return value


def choice(enum_type: type[enum.Enum]) -> Callable[[str], Any]:
    """An argparse type for an enum's values, with argparse-like wording."""
    values: tuple[str, ...] = tuple(member.value for member in enum_type)

    def convert(text: str) -> Any:
        if text not in values:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(values)})")
        return enum_type(text)

    return convert


def header_criterion(criterion: str) -> tuple[str, str]:
    name, sep, value = text(criterion).partition(":")
    if not sep or not name.strip() or " " in name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE: {criterion!r}")
    return name.strip(), value.strip()


def phase_threshold(text: str) -> tuple[str, nagiosplugin.Range]:
    from .check import PHASE_LABELS

    label, sep, spec = text.partition("=")
    if not sep or label not in PHASE_LABELS:
        raise argparse.ArgumentTypeError(
            f"expected LABEL=RANGE with LABEL one of {', '.join(PHASE_LABELS)}: {text!r}"
        )
    return label, nagios_range(spec)


def policy_rule(text: str) -> Any:
    from .policy import parse_policy_rule

    try:
        return parse_policy_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None


def nameserver(text: str) -> tuple[str, int]:
    from .dnscheck import parse_nameserver

    try:
        return parse_nameserver(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IP[:PORT] or [IPv6]:PORT: {text!r}") from None


def cert_days(text: str) -> tuple[float, float] | None:
    """``WARN[,CRIT]`` days; CRIT left out is 0 (CRITICAL once expired), as
    with check_http -C; ``0``: reported, never a state."""
    parts = text.split(",")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not WARN[,CRIT] days: {text!r} (like 21,7)") from None
    if len(numbers) > 2 or not all(math.isfinite(n) and 0 <= n <= 3650 for n in numbers):
        raise argparse.ArgumentTypeError(f"not WARN[,CRIT] days: {text!r} (like 21,7; 0 to turn it off)")
    if numbers == [0] or numbers == [0, 0]:
        return None
    warning = numbers[0]
    critical = numbers[1] if len(numbers) == 2 else 0.0
    if critical > warning:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the CRITICAL days ({critical:g}) are more than the WARNING days ({warning:g})"
        )
    return warning, critical


def textfile_path(value: str) -> str:
    """--prometheus-textfile: a ``.prom`` file, the only name node_exporter's
    textfile collector reads (anything else would be written and never seen)."""
    path = text(value)
    name = path.rsplit("/", 1)[-1]
    if not name.endswith(".prom") or name == ".prom":
        raise argparse.ArgumentTypeError(
            f"{value!r} does not end in .prom: node_exporter's textfile collector reads only *.prom files"
        )
    return path
