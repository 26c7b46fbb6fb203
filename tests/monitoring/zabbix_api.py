"""The Zabbix 6.0 API of a :class:`~.zabbix.ZabbixInstance`, over JSON-RPC to
the frontend that ``php -S`` serves on API_PORT: import, hosts, items, "check
now", history and triggers, and waiting for a value or a trigger state."""

import json
import time
import urllib.error
import urllib.request

from mailstack.config import PORT_BASE

from .common import MonitoringError

API_PORT = PORT_BASE + 80  # like 80
ITEM_FIELDS = (
    "itemid key_ name type value_type lastvalue lastclock lastns state error units valuemapid".split()
)
TRIGGER_FIELDS = "triggerid description value state error priority expression lastchange".split()


class ZabbixApi:
    """The API calls; ``token`` is set by login()."""

    ADMIN = ("Admin", "zabbix")
    token = None

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

