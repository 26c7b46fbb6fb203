"""Entry point of the console script and of ``python -m check_email_roundtrip``.

Kept free of third-party imports: if a dependency is missing, Python would
print a traceback and exit 1 (WARNING to Nagios); we print one UNKNOWN line
and exit 3 instead.
"""

import sys
import time

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
    cli_main(started=started)


if __name__ == "__main__":
    main()
