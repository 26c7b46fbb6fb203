"""The wait's polling against a scripted folder: when a search's response
announces a new message (Dovecot syncs the folder at the end of a command,
so the search that sees `* n EXISTS` still finds nothing), the next search
follows at once instead of after a pause.  Timing on the real stack is
bench/ row 2 (detection lag)."""

from typing import Any

from check_email_roundtrip import watch as watch_module
from check_email_roundtrip.deadline import Deadline
from check_email_roundtrip.facts import WatchKind
from check_email_roundtrip.watch import Watch, Watcher

MARKER = "emailrtprobe0123456789abcdef01234567"
HEADER = f"X-Check-Email-Roundtrip: {MARKER}\r\nSubject: probe\r\n\r\n".encode()


class ScriptedFolder:
    """Search n answers what the script says: (announced_new, found UIDs)."""

    def __init__(self, script: list[tuple[bool, list[int]]]):
        self.script = script
        self.searches = 0
        self.announced_new = False
        self.last_seconds = 0.001

    def search(self, keys: Any) -> list[int]:
        self.announced_new, uids = self.script[min(self.searches, len(self.script) - 1)]
        self.searches += 1
        return uids

    def fetch_header(self, uid: int) -> bytes:
        return HEADER


def wait_on(script: list[tuple[bool, list[int]]], monkeypatch: Any) -> tuple[Any, list[float]]:
    pauses: list[float] = []
    monkeypatch.setattr(watch_module.time, "sleep", pauses.append)
    folder = ScriptedFolder(script)
    watcher = Watcher([Watch(folder, "INBOX", WatchKind.TARGET, since_uid=10)])  # type: ignore[arg-type]
    loaded: list[bool] = []
    started = watch_module.time.monotonic()
    sighting = watcher.wait(MARKER, started, 60.0, Deadline(60.0), lambda: loaded.append(True))
    assert loaded == [True]  # the idle work ran once, in the first pause
    return sighting, pauses


def test_search_announcing_new_mail_is_repeated_at_once(monkeypatch: Any) -> None:
    sighting, pauses = wait_on([(False, []), (False, []), (True, []), (False, [11])], monkeypatch)
    assert sighting.arrival is not None and sighting.arrival.uid == 11
    assert len(pauses) == 2  # after searches 1 and 2; none between 3 (EXISTS) and 4


def test_a_busy_folder_does_not_turn_polling_into_a_loop(monkeypatch: Any) -> None:
    # every search announces new mail (others' messages), the probe comes 6th
    script = [(True, [])] * 5 + [(True, [11])]
    sighting, pauses = wait_on(script, monkeypatch)
    assert sighting.arrival is not None and sighting.arrival.uid == 11
    assert len(pauses) == 2  # one immediate repeat after each pause: 1, 2 (at once), pause, 3, 4, pause, 5, 6
