import re
import urllib.parse

from check_email_roundtrip.marker import MARKER_PREFIX, is_marker, new_marker


def test_marker_has_prefix_and_96_random_bits_of_hex():
    marker = new_marker()
    assert marker.startswith(MARKER_PREFIX)
    random_part = marker[len(MARKER_PREFIX) :]
    assert re.fullmatch(r"[0-9a-f]{24}", random_part)  # 24 hex digits = 96 bits >= 64
    assert is_marker(marker)


def test_marker_is_url_safe_and_one_search_word():
    marker = new_marker()
    assert urllib.parse.quote(marker, safe="") == marker
    assert marker.isalnum()


def test_markers_are_fresh_every_time():
    markers = {new_marker() for _ in range(1000)}
    assert len(markers) == 1000


def test_is_marker_rejects_other_text():
    assert not is_marker("hello")
    assert not is_marker(MARKER_PREFIX + "xyz")
    assert not is_marker(new_marker() + "0")
