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

import json
import os
import pwd
import shutil
import subprocess
import time
import urllib.error
import urllib.request

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
API_PORT = PORT_BASE + 80  # like 80
ITEM_TIMEOUT = 30  # Timeout=: the most Zabbix 6.0 takes

# history.get's "history" by value_type: 0 float, 1 character, 2 log, 3 unsigned, 4 text
FLOAT, CHAR, LOG, UNSIGNED, TEXT = "0", "1", "2", "3", "4"

ITEM_FIELDS = (
    "itemid key_ name type value_type lastvalue lastclock lastns state error units valuemapid".split()
)
TRIGGER_FIELDS = "triggerid description value state error priority expression lastchange".split()

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


class ZabbixInstance:
    """A private Zabbix 6.0 (PostgreSQL, zabbix_server, the API) on loopback.

    start() installs the packages when missing and brings everything up;
    stop() ends it (SIGTERM, then SIGKILL for leftovers) and removes the
    directory unless keep_dir.  timings holds how long each part took.
    """

    ADMIN = ("Admin", "zabbix")

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

    # -- the API -----------------------------------------------------------
    def call(self, method, params, auth=True, timeout=60):
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        if auth:
            body["auth"] = self.token  # 6.0 reads no Authorization header
        request = urllib.request.Request(
            f"http://127.0.0.1:{API_PORT}/api_jsonrpc.php",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json-rpc"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise MonitoringError(
                f"{method}: HTTP {exc.code} {exc.read().decode(errors='replace')}"
            ) from None
        if "error" in answer:
            raise MonitoringError(f"{method}: {answer['error']}")
        return answer["result"]

    def login(self):
        user, password = self.ADMIN
        self.token = self.call("user.login", {"username": user, "password": password}, auth=False)

    def import_template(self, yaml_text):
        """configuration.import with the 6.0 rules: create and update everything."""
        both = {"createMissing": True, "updateExisting": True}
        rules = {
            name: dict(both)
            for name in (
                "groups",
                "templates",
                "items",
                "triggers",
                "valueMaps",
                "discoveryRules",
                "graphs",
                "httptests",
                "templateDashboards",
            )
        }
        rules["groups"] = {"createMissing": True}
        rules["templateLinkage"] = {"createMissing": True}
        return self.call("configuration.import", {"format": "yaml", "source": yaml_text, "rules": rules})

    def template_id(self, name):
        found = self.call("template.get", {"filter": {"host": [name]}, "output": ["templateid"]})
        if not found:
            raise MonitoringError(f"template {name!r} not found")
        return found[0]["templateid"]

    def create_host(self, name, template, macros=None):
        """A host linked to template (its technical name) with host macros
        ({"{$NAME}": "value"}), in "Linux servers", with an agent interface
        nothing polls (host.create needs one)."""
        group = self.call("hostgroup.get", {"filter": {"name": ["Linux servers"]}, "output": ["groupid"]})
        result = self.call(
            "host.create",
            {
                "host": name,
                "groups": [{"groupid": group[0]["groupid"]}],
                "templates": [{"templateid": self.template_id(template)}],
                "interfaces": [
                    {"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": "10050"}
                ],
                "macros": [{"macro": key, "value": str(value)} for key, value in (macros or {}).items()],
            },
        )
        return result["hostids"][0]

    def reload_config_cache(self):
        rc, out = run_command([ZABBIX_SERVER, "-c", self.server_conf, "-R", "config_cache_reload"])
        if rc != 0:
            raise MonitoringError(f"config_cache_reload failed: {out}")

    def items(self, hostid):
        """{key_: item} of a host, with lastvalue, lastclock, state, error."""
        found = self.call("item.get", {"hostids": [hostid], "output": ITEM_FIELDS})
        return {item["key_"]: item for item in found}

    def item(self, hostid, key):
        items = self.items(hostid)
        if key not in items:
            raise MonitoringError(f"no item {key!r} on host {hostid}: {sorted(items)}")
        return items[key]

    def check_now(self, itemid):
        """task.create "check now" (type 6).  Dropped by the server if the
        item is not in its configuration cache yet: reload_config_cache() first."""
        return self.call("task.create", [{"type": 6, "request": {"itemid": str(itemid)}}])

    def _item(self, itemid):
        found = self.call("item.get", {"itemids": [itemid], "output": "extend"})
        if not found:
            raise MonitoringError(f"no item {itemid}")
        return found[0]

    def snapshot(self, itemid):
        """What run_now compares with: the item's last value and state."""
        item = self._item(itemid)
        return item["lastclock"], item["lastns"], item["state"], item["error"]

    def run_now(self, itemid, timeout=90.0, retry_after=10.0, asked_since=None):
        """Check now, and wait for the item's next value or for it to turn
        unsupported; returns the item (dict from item.get) and the seconds
        it took.  The check now is repeated when nothing came after
        retry_after: the server drops one for an item it has not cached yet.
        asked_since: (snapshot, time.monotonic()) of a check now already
        asked for: wait for that one."""
        started = time.monotonic()
        if asked_since is None:
            seen, asked = self.snapshot(itemid), 0.0
        else:
            (seen, asked), started = asked_since, asked_since[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                raise MonitoringError(f"zabbix_server exited with {self.server.returncode}\n{self.logs()}")
            if time.monotonic() - asked >= retry_after:
                self.check_now(itemid)
                asked = time.monotonic()
            item = self._item(itemid)
            if (item["lastclock"], item["lastns"], item["state"], item["error"]) != seen:
                return item, time.monotonic() - started
            time.sleep(0.25)
        raise MonitoringError(f"item {itemid}: nothing new within {timeout:.0f} s\n{self.logs()}")

    def _until(self, look, timeout, what):
        """look() until it returns something; MonitoringError naming what
        (and the last thing looked at) after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found, seen = look()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise MonitoringError(f"{what} within {timeout:.0f} s: {seen}\n{self.logs()}")
            time.sleep(0.25)

    def wait_for_item(self, hostid, key, since_clock, timeout=30.0):
        """The host's item `key` once its lastclock is at least since_clock
        (dependent items follow their master after preprocessing)."""

        def look():
            item = self.item(hostid, key)
            return (item if int(item["lastclock"]) >= int(since_clock) else None), item

        return self._until(look, timeout, f"{key}: no value since {since_clock}")

    def wait_for_trigger(self, hostid, name, value="1", timeout=90.0):
        """The host's trigger `name` once its value is `value` (1 PROBLEM)."""

        def look():
            trigger = self.triggers(hostid).get(name)
            if trigger is None:
                raise MonitoringError(f"no trigger {name!r} on host {hostid}")
            return (trigger if trigger["value"] == value else None), trigger

        return self._until(look, timeout, f"trigger {name!r} not {value}")

    def history(self, itemid, value_type, limit=10):
        """The item's newest values, newest first."""
        return self.call(
            "history.get",
            {
                "itemids": [itemid],
                "history": int(value_type),
                "sortfield": "clock",
                "sortorder": "DESC",
                "limit": limit,
                "output": "extend",
            },
        )

    def triggers(self, hostid):
        """{description: trigger} of a host, expanded, with value (1 PROBLEM) and state."""
        found = self.call(
            "trigger.get",
            {
                "hostids": [hostid],
                "output": TRIGGER_FIELDS,
                "expandDescription": True,
                "expandExpression": True,
            },
        )
        return {trigger["description"]: trigger for trigger in found}

    def write_secret(self, name, text):
        """A file only the server's user can read, as the template's README
        asks for the password file; returns its path."""
        path = self.path("secrets", name)
        account = pwd.getpwnam(self.user)
        write_text(path, text, 0o600)
        os.chown(path, account.pw_uid, account.pw_gid)
        return path
