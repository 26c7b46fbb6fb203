"""The command line: the option table (``options.py``) as an argparse parser.

Two things argparse does not do the way a monitoring plugin needs: a bad
option is a :class:`~.options.UsageError` (exit 3, one line), not argparse's
exit 2 (CRITICAL to Nagios); and a value that looks like a negative number
(``--wait -1``) still reaches its option's converter, although ``-4`` and
``-6`` are options.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from . import __version__
from .converters import text
from .options import IMAP_PASSWORD_ENV, OPTION_GROUPS, SMTP_PASSWORD_ENV, Kind, Option, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

NEGATIVE_NUMBER = re.compile(r"^-\.?\d")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit 2: CRITICAL to Nagios
        raise UsageError(message)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return super().parse_known_args(self._bind_negative_values(args), namespace)

    def _bind_negative_values(self, args: Sequence[str] | None) -> list[str]:
        """``--wait -1`` as ``--wait=-1``.  With -4 and -6 defined, argparse
        takes every "-1" for an option, so a negative value would be "expected
        one argument" rather than its real fault; an option that takes a value
        takes the next word, as getopt does."""
        words = list(sys.argv[1:] if args is None else args)
        takes_value = {
            flag for action in self._actions if action.nargs != 0 for flag in action.option_strings
        }
        bound: list[str] = []
        for word in words:
            if bound and bound[-1] in takes_value and NEGATIVE_NUMBER.match(word):
                bound[-1] = f"{bound[-1]}={word}"
            else:
                bound.append(word)
        return bound


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="check_email_roundtrip",
        description="Prove that email is submitted and delivered: submit a marked message over SMTP and "
        "find it again over IMAP, timing every phase (Nagios/Icinga plugin).",
        epilog=f"Passwords: from --smtp-password-file/--imap-password-file or the environment variables "
        f"{SMTP_PASSWORD_ENV} / {IMAP_PASSWORD_ENV}; never on the command line, where ps would show them.  "
        "Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    for group in OPTION_GROUPS:
        target = parser.add_argument_group(group.title) if group.title else parser
        for option in group.options:
            _add(target, option)
    parser.add_argument("-V", "--version", action="version", version=f"check_email_roundtrip {__version__}")
    return parser


def _add(target: Any, option: Option) -> None:
    settings: dict[str, Any] = {"help": option.help, "dest": option.name}
    if option.kind is Kind.FLAG:
        settings["action"] = "store_true"
    elif option.kind is Kind.COUNT:
        settings.update(action="count", default=option.default)
    else:
        settings.update(type=option.convert or text, metavar=option.metavar, default=option.default)
        if option.kind is Kind.LIST:
            settings["action"] = "append"
    target.add_argument(*option.flags, **settings)
