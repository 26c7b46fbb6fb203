"""The packaging metadata agrees with itself: setup.cfg's version floors and
debian/control's versioned dependencies, the Debian version and the plugin's.

That the floors are the lower end CI tests with is test_debian_package.py's
(the run on Debian's own libraries)."""

import configparser
import pathlib
import re

from check_email_roundtrip import __version__

ROOT = pathlib.Path(__file__).parent.parent
# PyPI distribution -> Debian package
DEBIAN_NAMES = {"nagiosplugin": "python3-nagiosplugin", "dnspython": "python3-dnspython",
                "authres": "python3-authres"}


def setup_cfg_floors():
    """{distribution: floor} from setup.cfg's install_requires ('name>=x.y.z' each)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    floors = {}
    for line in config["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", line.strip())
        assert match, f"setup.cfg: {line!r} is not 'name>=floor'"
        floors[match.group(1)] = match.group(2)
    return floors


def control_depends():
    """{package: version or None} of the binary package's Depends in debian/control."""
    control = (ROOT / "debian" / "control").read_text()
    binary = control.split("\n\nPackage: ", 1)[1]
    field = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", binary, re.M).group(1)
    depends = {}
    for item in field.split(","):
        item = " ".join(item.split())
        if not item:
            continue
        match = re.fullmatch(r"([A-Za-z0-9.+${}:-]+)(?: \(>= ([^)]+)\))?", item)
        assert match, f"debian/control: unexpected dependency {item!r}"
        depends[match.group(1)] = match.group(2)
    return depends


def test_the_debian_version_is_the_plugins():
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(rf"check-email-roundtrip \({re.escape(__version__)}\) ", first), first


def test_setup_cfg_floors_are_debian_controls():
    floors = setup_cfg_floors()
    assert set(floors) == set(DEBIAN_NAMES)
    depends = control_depends()
    for dist, floor in floors.items():
        assert depends.get(DEBIAN_NAMES[dist]) == floor, (dist, floor, depends)
