"""Zabbix 6.0, privately: PostgreSQL, zabbix_server and the API of its
frontend, all on 127.0.0.1, in one directory under WORK_ROOT.

    with ZabbixInstance() as zabbix:
        zabbix.import_template(yaml_text)                 # configuration.import
        hostid = zabbix.create_host("mail", "check_email_roundtrip", {"{$EMAIL.HOST}": "localhost"})
        zabbix.reload_config_cache()                      # else the server sees the host within 60 s
        master = zabbix.item(hostid, master_key)
        item, seconds = zabbix.run_now(master["itemid"])  # check now, wait for the value
        zabbix.items(hostid), zabbix.triggers(hostid), zabbix.history(itemid, FLOAT)

What runs (Debian 12's packages, see ZABBIX_PACKAGES; /etc/zabbix, the
system PostgreSQL and any running Zabbix are neither read nor changed):

- PostgreSQL 15 (initdb as postgres, trust on loopback, fsync off) on
  PORT_BASE + 432, the Zabbix schema loaded from /usr/share/zabbix-server-pgsql
  as one query string per file (psql's statement-by-statement load of the
  173,000 INSERTs takes four times as long), then ANALYZE;
- zabbix_server -f on PORT_BASE + 51 (wrapped into 1024..32767), with a
  small configuration (templates/zabbix/zabbix_server.conf), ExternalScripts the instance's
  own directory holding a symlink to the installed plugin, Timeout 30 (the
  most Zabbix 6.0 allows an external check);
- the frontend's API with `php -S` on PORT_BASE + 80 (no web server) from a
  copy of /usr/share/zabbix whose configuration file path points into the
  instance directory (Debian fixes it at /etc/zabbix/zabbix.conf.php).

PORT_BASE is the mail stack's ($MAILSTACK_PORT_BASE): two test sessions with
their own stacks get their own Zabbix ports too.

The server runs as the zabbix user, as it does in production, when that
user can execute the installed plugin (a venv under /var/tmp can; one
under /root cannot), else as root with AllowRoot=1.  Either way the check
runs with cwd / and the server's environment: what the plugin needs (a state
directory, the password file) comes through the item key, as the template
says.
"""

import os
import pwd
import shutil
import subprocess
import time

from mailstack.config import PORT_BASE
from mailstack.procs import kill_tree, proc_alive, read_pidfile, tail

from .common import (
    PLUGIN,
    STOP_TIMEOUT,
    ZABBIX_TEMPLATES_DIR,
    MonitoringError,
    ensure_packages,
    load_script,
    plugin_path,
    reap_stale,
    render,
    run_command,
    workdir,
    write_text,
)
from .zabbix_api import API_PORT, ZabbixApi

# php8.2-cgi named keeps apt from pulling in apache2-bin for the frontend;
# postgresql-15 is there on most images already (its initdb, pg_ctl, psql)
ZABBIX_PACKAGES = (
    "zabbix-server-pgsql",
    "zabbix-frontend-php",
    "php8.2-pgsql",
    "php8.2-cli",
    "php8.2-cgi",
    "postgresql-15",
)
ZABBIX_SERVER = "/usr/sbin/zabbix_server"
PG_BIN = "/usr/lib/postgresql/15/bin"
SQL_DIR = "/usr/share/zabbix-server-pgsql"
SQL_FILES = ("schema.sql.gz", "images.sql.gz", "data.sql.gz")
FRONTEND = "/usr/share/zabbix"
FRONTEND_CONFIG_CLASS = "include/classes/core/CConfigFile.php"
DEBIAN_CONFIG_PATH = "/etc/zabbix/zabbix.conf.php"

# like 10051; zabbix_server takes ListenPort 1024..32767 only, so a high base wraps
SERVER_PORT = 1024 + (PORT_BASE + 51 - 1024) % (32767 - 1024)
DB_PORT = PORT_BASE + 432  # like 5432
ITEM_TIMEOUT = 30  # Timeout=: the most Zabbix 6.0 takes

# history.get's "history" by value_type: 0 float, 1 character, 2 log, 3 unsigned, 4 text
FLOAT, CHAR, LOG, UNSIGNED, TEXT = "0", "1", "2", "3", "4"


LOAD_SQL = r"""
$c = pg_connect($argv[1]);
if (!$c) { fwrite(STDERR, "cannot connect\n"); exit(1); }
foreach (array_slice($argv, 2) as $f) {
    if (!@pg_query($c, gzdecode(file_get_contents($f)))) {
        fwrite(STDERR, "$f: " . pg_last_error($c) . "\n");
        exit(1);
    }
}
"""


def template_generator():
    """zabbix-templates/generate.py as a module: the template and its parts."""
    return load_script(os.path.join(ZABBIX_TEMPLATES_DIR, "generate.py"), "zabbix_generate")


def reap_stale_instances():
    """Stop and remove ZabbixInstance leftovers of test sessions that died
    without their teardown (see common.reap_stale)."""
    return reap_stale("zabbix-", ["run/zabbix_server.pid", "run/php.pid", "pgdata/postmaster.pid"])


class ZabbixInstance(ZabbixApi):
    """A private Zabbix 6.0 (PostgreSQL, zabbix_server, the API) on loopback.

    start() installs the packages when missing and brings everything up;
    stop() ends it (SIGTERM, then SIGKILL for leftovers) and removes the
    directory unless keep_dir.  timings holds how long each part took.
    """


    def __init__(self, timeout=ITEM_TIMEOUT, keep_dir=False):
        self.timeout = timeout
        self.keep_dir = keep_dir
        self.base = None
        self.server = None
        self.php = None
        self.token = None
        self.user = "root"
        self.timings = {}
        self._pg_started = False

    # -- paths -------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.base, *parts)

    @property
    def server_conf(self):
        return self.path("zabbix_server.conf")

    @property
    def server_log(self):
        return self.path("log", "zabbix_server.log")

    @property
    def external_scripts(self):
        return self.path("externalscripts")

    def logs(self, n=40):
        return "".join(
            f"--- {path}\n{tail(path, n)}"
            for path in (
                self.server_log,
                self.path("log", "server.stdout"),
                self.path("log", "php.log"),
                self.path("pglog", "postgres.log"),
            )
        )

    # -- life cycle --------------------------------------------------------
    def start(self):
        started = time.monotonic()
        installed, seconds = ensure_packages(ZABBIX_PACKAGES)
        self.timings["install"] = seconds
        reap_stale_instances()
        self.base = workdir("zabbix-")
        os.chmod(self.base, 0o755)  # postgres and zabbix walk into it
        write_text(self.path("owner"), f"{os.getpid()}\n")
        try:
            mark = time.monotonic()
            self._start_postgres()
            self._load_schema()
            self.timings["database"] = time.monotonic() - mark
            mark = time.monotonic()
            self._start_server()
            self._start_api()
            self.login()
            self.timings["server_and_api"] = time.monotonic() - mark
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started - self.timings["install"]
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _as_postgres(self, *cmd, timeout=120):
        rc, out = run_command(["runuser", "-u", "postgres", "--", *cmd], timeout=timeout)
        if rc != 0:
            raise MonitoringError(f"{' '.join(cmd)} failed (rc={rc}):\n{out}\n{self.logs()}")
        return out

    def _start_postgres(self):
        postgres = pwd.getpwnam("postgres")
        for sub in ("pgdata", "pgsock"):
            os.makedirs(self.path(sub), mode=0o700)
            os.chown(self.path(sub), postgres.pw_uid, postgres.pw_gid)
        for sub in ("pglog", "log"):
            os.makedirs(self.path(sub), mode=0o755)
        os.chown(self.path("pglog"), postgres.pw_uid, postgres.pw_gid)
        self._as_postgres(
            f"{PG_BIN}/initdb",
            "-D",
            self.path("pgdata"),
            "-U",
            "zabbix",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(
            [
                f"-p {DB_PORT}",
                f"-k {self.path('pgsock')}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._as_postgres(
            f"{PG_BIN}/pg_ctl",
            "-w",
            "-t",
            "60",
            "-D",
            self.path("pgdata"),
            "-l",
            self.path("pglog", "postgres.log"),
            "-o",
            options,
            "start",
        )
        self._pg_started = True
        self.sql("CREATE DATABASE zabbix", database="postgres")

    def sql(self, statement, database="zabbix"):
        rc, out = run_command(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(DB_PORT),
                "-U",
                "zabbix",
                "-d",
                database,
                "-c",
                statement,
            ]
        )
        if rc != 0:
            raise MonitoringError(f"psql {statement!r} failed:\n{out}")
        return out

    def _load_schema(self):
        connect = f"host=127.0.0.1 port={DB_PORT} dbname=zabbix user=zabbix"
        files = [os.path.join(SQL_DIR, name) for name in SQL_FILES]
        rc, out = run_command(["php", "-d", "memory_limit=-1", "-r", LOAD_SQL, connect, *files], timeout=300)
        if rc != 0:
            raise MonitoringError(f"loading the Zabbix schema failed:\n{out}")
        # the stock host "Zabbix server" would poll an agent on 127.0.0.1:10050
        self.sql("UPDATE hosts SET status = 1 WHERE host = 'Zabbix server'")
        self.sql("ANALYZE")

    def _server_user(self):
        """zabbix when it can run the installed plugin, else root."""
        rc, _ = run_command(["runuser", "-u", "zabbix", "--", plugin_path(), "--version"], timeout=60)
        return "zabbix" if rc == 0 else "root"

    def _start_server(self):
        self.user = self._server_user()
        account = pwd.getpwnam(self.user)
        for sub in ("run", "externalscripts", "state", "secrets"):
            os.makedirs(self.path(sub), mode=0o750 if sub != "secrets" else 0o700)
        for sub in ("run", "externalscripts", "state", "secrets", "log"):
            os.chown(self.path(sub), account.pw_uid, account.pw_gid)
        os.symlink(plugin_path(), os.path.join(self.external_scripts, PLUGIN))
        write_text(
            self.server_conf,
            render(
                "zabbix/zabbix_server.conf",
                db_port=DB_PORT,
                listen_port=SERVER_PORT,
                log_file=self.server_log,
                pid_file=self.path("run", "zabbix_server.pid"),
                socket_dir=self.path("run"),
                external_scripts=self.external_scripts,
                timeout=self.timeout,
                allow_root="AllowRoot=1" if self.user == "root" else "# runs as zabbix",
                cache_update_frequency=60,
            ),
            0o644,
        )
        # cwd / and a bare environment, as a service manager starts it
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        self.server = self._spawn([ZABBIX_SERVER, "-f", "-c", self.server_conf], "server.stdout", "/", env)

        def started():
            if self.server.poll() is not None:
                raise MonitoringError(f"zabbix_server exited with {self.server.returncode}\n{self.logs()}")
            return ("server #0 started" in tail(self.server_log, 400)) or None, "no 'server #0 started'"

        self._until(started, 30, "zabbix_server did not start")

    def _spawn(self, cmd, log_name, cwd, env=None):
        """A daemon of ours in its own session, its output to log/log_name."""
        with open(self.path("log", log_name), "a") as log:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )

    def _start_api(self):
        ui = self.path("ui")
        rc, out = run_command(["cp", "-a", FRONTEND, ui])
        if rc != 0:
            raise MonitoringError(f"copying {FRONTEND} failed: {out}")
        conf = self.path("zabbix.conf.php")
        write_text(conf, render("zabbix/zabbix.conf.php", db_port=DB_PORT, listen_port=SERVER_PORT), 0o644)
        config_class = os.path.join(ui, FRONTEND_CONFIG_CLASS)
        with open(config_class, encoding="utf-8") as fh:
            text = fh.read()
        if DEBIAN_CONFIG_PATH not in text:
            raise MonitoringError(f"{config_class} does not name {DEBIAN_CONFIG_PATH}")
        write_text(config_class, text.replace(DEBIAN_CONFIG_PATH, conf))
        self.php = self._spawn(["php", "-S", f"127.0.0.1:{API_PORT}", "-t", ui], "php.log", ui)
        write_text(self.path("run", "php.pid"), f"{self.php.pid}\n")

        def answers():
            if self.php.poll() is not None:
                raise MonitoringError(f"php -S exited with {self.php.returncode}\n{self.logs()}")
            try:
                return self.call("apiinfo.version", {}, auth=False), None
            except (OSError, MonitoringError) as exc:
                return None, exc

        self._until(answers, 20, "the Zabbix API did not answer")

    def stop(self, timeout=STOP_TIMEOUT):
        """Everything started, in reverse; returns the pids still alive (none, normally)."""
        left = []
        for proc in (self.php, self.server):
            if proc is not None and proc.poll() is None:
                left += kill_tree([proc.pid], timeout, proc.poll)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        if self._pg_started:
            rc, out = run_command(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    f"{PG_BIN}/pg_ctl",
                    "-w",
                    "-t",
                    "30",
                    "-D",
                    self.path("pgdata"),
                    "-m",
                    "fast",
                    "stop",
                ]
            )
            pid = read_pidfile(self.path("pgdata", "postmaster.pid"))
            if rc != 0 and pid and proc_alive(pid):
                left += kill_tree([pid], timeout)
            self._pg_started = False
        if self.base and not self.keep_dir and not left:
            shutil.rmtree(self.base, ignore_errors=True)
        return left

    def reload_config_cache(self):
        rc, out = run_command([ZABBIX_SERVER, "-c", self.server_conf, "-R", "config_cache_reload"])
        if rc != 0:
            raise MonitoringError(f"config_cache_reload failed: {out}")

    def write_secret(self, name, text):
        """A file only the server's user can read, as the template's README
        asks for the password file; returns its path."""
        path = self.path("secrets", name)
        account = pwd.getpwnam(self.user)
        write_text(path, text, 0o600)
        os.chown(path, account.pw_uid, account.pw_gid)
        return path
