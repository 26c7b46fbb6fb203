"""Real monitoring systems for the tests: Icinga 2, Nagios 4 and Zabbix 6.0, privately.

Run as root on Debian 12 (no systemd needed).

    ensure_packages()                    apt-get installs icinga2-bin, icinga2-common,
                                         nagios4-core (and openssl) when missing,
                                         without starting any daemon
    icinga2_validate(text_or_paths)      -> (returncode, output) of `icinga2 daemon -C`
    command_conf_files()                 the CheckCommand's file to include: the
                                         repository's, or none when the Debian
                                         package put the same file into the ITL
    Icinga2Instance(...)                 a private Icinga 2 daemon with the REST API on
                                         127.0.0.1 that runs check_email_roundtrip
    nagios4_verify(command_definition)   -> (returncode, output) of `nagios4 -v`
    readme_nagios_blocks(readme)         the `define command`/`define service` blocks
                                         of the README's "Install" section
    ZabbixInstance()                     a private Zabbix 6.0 (PostgreSQL, zabbix_server,
                                         the API through `php -S`) on 127.0.0.1 that
                                         runs the plugin as an external check; it
                                         installs its own packages (ZABBIX_PACKAGES)

Nothing here reads or writes /etc/icinga2, /etc/nagios4 or /etc/zabbix:
icinga2.py, nagios4.py and zabbix.py say how; common.py holds what they
share, templates/ the configuration they write.  Processes are handled with
the mail stack's helpers (mailstack.procs), packages with its installer
(mailstack.packages).
"""

from .common import (
    COMMAND_CONF,
    PACKAGES,
    PLUGIN,
    README,
    SERVICES_CONF,
    WORK_ROOT,
    MonitoringError,
    command_conf_files,
    ensure_packages,
    plugin_dir,
    plugin_path,
)
from .icinga2 import Icinga2Instance, critical_lines, icinga2_validate, icinga_string, reap_stale_instances
from .nagios4 import nagios4_verify, readme_nagios_blocks
from .zabbix import ZABBIX_PACKAGES, ZabbixInstance

__all__ = [
    "COMMAND_CONF", "PACKAGES", "PLUGIN", "README", "SERVICES_CONF", "WORK_ROOT", "Icinga2Instance",
    "MonitoringError", "command_conf_files", "critical_lines", "ensure_packages", "icinga2_validate",
    "icinga_string", "nagios4_verify", "plugin_dir", "plugin_path", "reap_stale_instances",
    "readme_nagios_blocks",
    "ZABBIX_PACKAGES", "ZabbixInstance",
]
