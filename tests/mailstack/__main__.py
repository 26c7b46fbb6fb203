"""python3 tests/mailstack up|down|status|env [--dir DIR]  (also: python3 -m mailstack)."""

import argparse
import os
import shlex
import sys

if __package__ in (None, ""):
    # Run as a directory: sys.path[0] is this package's own directory, where
    # its modules would shadow top-level ones (dnsmasq.py, tls.py, ...).
    # Put the tests directory there instead and import the package.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

from mailstack.config import DEFAULT_DIR  # noqa: E402
from mailstack.stack import MailStack  # noqa: E402
from mailstack.system import StackError  # noqa: E402


def summary(stack):
    info = stack.info()
    ports = info["ports"]
    host = info["host"]
    lines = [
        f"mail stack in {stack.dir} (stack.json: {stack.stack_json})",
        f"  submission  {host}:{ports['submission']} STARTTLS   submissions {host}:{ports['submissions']} TLS"
        f"   mx {host}:{ports['mx']}",
        f"  imap        {host}:{ports['imap']} STARTTLS   imaps       {host}:{ports['imaps']} TLS",
        f"  TLS: verify as {info['tls_hostname']!r} with CA {stack.ca}",
        f"  dns         {info['dns']['nameserver']} (dnsmasq)     rspamd milter "
        f"{host}:{info['rspamd']['milter_port']}  authserv-id {info['authserv_id']}",
        f"  DKIM: d={info['dkim']['domain']} s={info['dkim']['selector']} key {stack.dkim_key}",
        f"  OAuth2 IdP  {info['oauth']['issuer']}  token {info['oauth']['token_url']}"
        f"  introspection {info['oauth']['introspection_url']}",
        f"  OAuth2 clients: {', '.join(info['oauth']['clients'])} (secrets in {stack.secrets_dir})",
    ]
    for user in info["users"].values():
        lines.append(f"  user {user['address']:<20} password file {user['password_file']}")
    lines.append(f"  logs: {', '.join(info['logs'].values())}")
    return "\n".join(lines)


def print_status(stack):
    for name, state in stack.status().items():
        print(f"{name:<8} {'running' if state['running'] else 'STOPPED'} pid={state['pid']}")
        for endpoint, ok in state["endpoints"].items():
            print(f"    {endpoint:<45} {'ok' if ok else 'DOWN'}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 tests/mailstack",
                                     description="loopback mail stack for check_email_roundtrip tests")
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", default=None,
                        help=f"state directory (default: $MAILSTACK_DIR or {DEFAULT_DIR}); "
                             "ports: $MAILSTACK_PORT_BASE (default 10000)")
    args = parser.parse_args(argv)
    stack = MailStack(args.dir)
    try:
        if args.command == "up":
            stack.up()
            print(summary(stack))
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            print_status(stack)
            return 0 if stack.healthy() else 1
        elif args.command == "env":
            stack.check_created()
            for name, value in stack.env().items():
                print(f"export {name}={shlex.quote(value)}")
    except StackError as exc:
        print(f"mailstack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
