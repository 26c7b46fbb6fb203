"""Nagios 4, privately: `nagios4 -v` on a nagios.cfg of our own whose every
path is in a temporary directory.  Nagios only verifies here, which runs
nothing."""

import os
import re
import shutil

from .common import (
    README,
    MonitoringError,
    ensure_packages,
    plugin_dir,
    render,
    run_command,
    workdir,
    write_text,
)

NAGIOS4 = "/usr/sbin/nagios4"


def nagios4_verify(command_definition_text, host_names=("mail.example.com",), keep_dir=False):
    """`nagios4 -v` on a private nagios.cfg around the given definitions.

    command_definition_text: `define command {...}` (and optionally `define
    service {...}`) text.  The rest is here: a 24x7 timeperiod, a contact and
    contact group, the templates generic-service/generic-host, one host per
    host_names (plus every host_name the text's services use), and, when the
    text defines no service, one service using its first command.
    $USER1$ is the directory of the installed plugin.  Returns (rc, output).
    """
    ensure_packages()
    base = workdir("nagios4-")
    try:
        for sub in ("tmp", "checkresults", "archives"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        text = command_definition_text
        hosts = list(host_names)
        for name in re.findall(r"^\s*host_name\s+(\S+)", text, re.M):
            hosts.extend(h.strip() for h in name.split(",") if h.strip())
        objects = render("nagios4/objects.cfg")
        for host in dict.fromkeys(hosts):
            objects += render("nagios4/host.cfg", host=host)
        if not re.search(r"define\s+service\s*\{", text):
            commands = re.findall(r"^\s*command_name\s+(\S+)", text, re.M)
            if not commands:
                raise MonitoringError("no command_name in:\n" + text)
            objects += render("nagios4/service.cfg", host=hosts[0], command=commands[0])
        write_text(os.path.join(base, "objects.cfg"), objects)
        write_text(os.path.join(base, "command.cfg"), text if text.endswith("\n") else text + "\n")
        write_text(os.path.join(base, "resource.cfg"), f"$USER1$={plugin_dir()}\n")
        cfg = os.path.join(base, "nagios.cfg")
        write_text(cfg, render("nagios4/nagios.cfg", dir=base))
        cmd = [NAGIOS4, "-v", cfg]
        rc, out = run_command(cmd, timeout=60)
        return rc, f"$ {' '.join(cmd)}\n{out}"
    finally:
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


def readme_nagios_blocks(readme=README, section="Install"):
    """The `define command {...}` and `define service {...}` blocks of a section."""
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(rf"^## {re.escape(section)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not match:
        raise MonitoringError(f"README has no section {section!r}")
    body = match.group(1)
    return re.findall(r"^[ \t]*define\s+(?:command|service)\s*\{.*?^[ \t]*\}", body, re.M | re.S)
