"""Entry point of the console script and of ``python -m check_email_roundtrip``.

Kept free of third-party imports: if a dependency is missing, Python would
print a traceback and exit 1 (WARNING to Nagios); we print one UNKNOWN line
and exit 3 instead.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import NoReturn

PACKAGE = __name__.split(".")[0]


def main() -> None:
    started = time.monotonic()  # -t counts from here: Python's start-up is ours to pay
    try:
        from .cli import main as cli_main
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != PACKAGE:
            reason = (
                f"missing Python module {exc.name}: "
                f"install the plugin with its dependencies (pip install check_email_roundtrip)"
            )
            from .render import dump_json, json_document, requested_format

            if requested_format(sys.argv[1:]) == "json":
                print(dump_json(json_document("UNKNOWN", 3, reason, started_at=time.time())), end="")
            else:
                print(f"EMAIL_ROUNDTRIP UNKNOWN - {reason}")
            sys.exit(3)
        raise
    try:
        cli_main(started=started)
    except SystemExit as done:
        _leave(done)


def _leave(done: SystemExit) -> NoReturn:
    """Exit with the check's code without Python's finalization: tearing
    down the modules, OpenSSL and every object takes about 25 ms of CPU,
    a tenth of a round trip, after the result is already printed.  Nothing
    is lost by skipping it: the output is flushed here, every file the
    plugin writes is complete and renamed into place before this point, and
    its threads were joined (the sessions' goodbyes) or are daemons."""
    code = done.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("text") would have printed
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a reader gone away: the run still ends with its code (as _emit)
    os._exit(code)


if __name__ == "__main__":
    main()
