"""The Received chain read as hops (hops.py): sample headers, no server."""

import time
from datetime import datetime, timezone

import pytest
from nagiosplugin.state import Critical, Warn
from test_evaluation import delivered, evaluate, password_env, perfdata  # noqa: F401 (a fixture)

from check_email_roundtrip.facts import Hop, SmtpTimings
from check_email_roundtrip.hops import MAX_NAME, MAX_RECEIVED, parse_received, read_hops

HEADERS = __import__("pathlib").Path(__file__).parent / "headers"


def sample(name):
    return (HEADERS / name).read_bytes().replace(b"\n", b"\r\n") + b"\r\n"


def epoch(text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def block(*headers):
    """A header block from (name, value) pairs, top first."""
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers) + b"Subject: x\r\n\r\n"


def received(by, protocol, when, source="relay.example"):
    stamp = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").strftime("%a, %d %b %Y %H:%M:%S +0000")
    return ("Received", f"from {source} by {by} with {protocol} id X1; {stamp}")


def shape(hops):
    return [(hop.by, hop.protocol, hop.seconds, hop.skewed, hop.trusted) for hop in hops]


AR = ("Authentication-Results", "mx.example.test; spf=pass smtp.mailfrom=probe@example.test")


def test_the_test_stacks_greylisted_probe():
    # MAIL FROM at 04:00:13.6; greylisted for 4 s by the MX (see the sample)
    hops = read_hops(sample("received_mailstack.txt"), epoch("2026-12-02 04:00:13") + 0.6)
    assert shape(hops) == [
        ("localhost", "ESMTPSA", 0.0, False, False),  # the submission server: below the MX's header
        ("mx.example.test", "ESMTP", 4.0, False, True),  # comments ("with cipher") are not clauses
        ("localhost", "LMTP", 0.0, False, True),
    ]
    assert hops[1].stamped == datetime(2026, 12, 2, 4, 0, 17, tzinfo=timezone.utc)


def test_gmail_zones_and_its_own_hops():
    hops = read_hops(sample("received_gmail.txt"), epoch("2022-02-01 10:02:03") + 0.9)
    assert shape(hops) == [
        ("mail.example.com", "ESMTPSA", 1.0, False, False),
        ("mx.google.com", "ESMTPS", 62.0, False, True),  # 02:03:06 -0800 is 10:03:06 UTC
        ("2002:a05:7300:5c0b:b0:fb:7e5b:8e8f", "SMTP", 1.0, False, True),
    ]  # X-Received is not a Received header


def test_microsoft_365_writes_its_results_above_its_frontends_stamp():
    # Its MX's own header is below its Authentication-Results: counted as a
    # claim (too little trust, never too much); its inner hops are trusted.
    hops = read_hops(sample("received_microsoft365.txt"), epoch("2022-02-01 10:02:04"))
    assert shape(hops) == [
        ("mail.example.com", "ESMTPSA", 0.0, False, False),
        ("BN8NAM11FT004.mail.protection.outlook.com", "Microsoft", 62.0, False, False),
        ("BN9PR03CA0123.outlook.office365.com", "Microsoft", 1.0, False, True),
        ("DM6PR12MB4123.namprd12.prod.outlook.com", "Microsoft", 1.0, False, True),
    ]


def test_a_stamp_before_the_previous_one_is_skew_clamped_to_zero():
    header = block(
        received("mailbox.example.test", "LMTP", "2026-12-02 04:00:12"),  # same clock as the MX
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:10"),  # 5 s behind the submission
        AR,
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:15"),
    )
    hops = read_hops(header, epoch("2026-12-02 04:00:15") + 0.2)
    assert shape(hops) == [
        ("submit.example.test", "ESMTPSA", 0.0, False, False),
        ("mx.example.test", "ESMTP", 0.0, True, True),
        ("mailbox.example.test", "LMTP", 2.0, False, True),  # from the stamp before it, skewed or not
    ]


def test_the_first_hop_counts_from_the_second_mail_from_was_sent_in():
    header = block(AR, received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:15"))
    # stamped in the same second as MAIL FROM: 0 s, not a fraction of skew
    assert shape(read_hops(header, epoch("2026-12-02 04:00:15") + 0.99))[0][2:4] == (0.0, False)
    assert shape(read_hops(header, epoch("2026-12-02 04:00:12") + 0.5))[0][2:4] == (3.0, False)
    # stamped a second before it: the submission server's clock is behind ours
    assert shape(read_hops(header, epoch("2026-12-02 04:00:16") + 0.1))[0][2:4] == (0.0, True)


@pytest.mark.parametrize(
    "value, by, protocol",
    [
        (
            "from a.example by b.example with ESMTP id 1; Wed, 02 Dec 2026 04:00:17 +0000",
            "b.example",
            "ESMTP",
        ),
        ("from a.example with SMTP; Wed, 02 Dec 2026 04:00:17 +0000", "", "SMTP"),  # no by
        ("from a.example by b.example id 7; Wed, 02 Dec 2026 04:00:17 +0000", "b.example", ""),  # no with
        ("(qmail 12345 invoked by uid 89); 2 Dec 2026 04:00:17 -0000", "", ""),  # all in a comment
        ("by b.example (Postfix, from userid 0) id 4X; Wed, 2 Dec 2026 04:00:17 +0000", "b.example", ""),
        # Exim writes the TLS details after the protocol; nested and quoted parentheses
        (
            "from a.example ([192.0.2.1] helo=a) by b.example with esmtps (TLS1.3) tls "
            "TLS_AES_256_GCM_SHA384 (Exim 4.96 (Debian \\) x)) (envelope-from <p@a.example>) "
            "id 1abc-000 for q@b.example; Wed, 02 Dec 2026 04:00:17 +0000",
            "b.example",
            "esmtps",
        ),
        ("FROM a.example BY B.Example WITH LMTP; Wed, 02 Dec 2026 04:00:17 GMT", "B.Example", "LMTP"),
        ("from a by by with with; Wed, 02 Dec 2026 04:00:17 +0000", "", ""),  # keywords as values
    ],
)
def test_by_and_with_are_read_liberally(value, by, protocol):
    stamp = parse_received(value)
    assert stamp is not None and (stamp.by, stamp.protocol) == (by, protocol)
    assert stamp.stamped.astimezone(timezone.utc).replace(tzinfo=None) == datetime(2026, 12, 2, 4, 0, 17)


@pytest.mark.parametrize(
    "value",
    [
        "from a by b with ESMTP id 1",  # no date at all
        "from a by b with ESMTP; yesterday",
        "from a by b with ESMTP; Wed, 02 Dec 2026 25:61:00 +0000",
        "from a by b with ESMTP; Wed, 32 Foo 2026 04:00:17 +0000",
        "from a by b with ESMTP; Wed, 02 Dec 99999 04:00:17 +0000",
        "from a by b with ESMTP; Wed, 02 Dec 2026 04:00:17 +9999",
        "from a by b with ESMTP; Wed, 02 Dec 2026 04:00:17.123 +0000",
        "from a by b with ESMTP; (Wed, 02 Dec 2026 04:00:17 +0000)",  # only a comment
        "",
        ";",
        "(((((",
    ],
)
def test_a_date_that_does_not_parse_skips_the_hop_and_raises_nothing(value):
    assert parse_received(value) is None
    header = block(
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:19"),
        AR,
        ("Received", value),
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:15"),
    )
    hops = read_hops(header, epoch("2026-12-02 04:00:15"))
    # the MX's hop counts from the stamp before the skipped one
    assert [(hop.by, hop.seconds) for hop in hops] == [("submit.example.test", 0.0), ("mx.example.test", 4.0)]


def test_a_date_without_a_zone_is_taken_as_utc():
    stamp = parse_received("from a by b with SMTP; 2 Dec 2026 04:00:17")
    assert stamp is not None and stamp.stamped == datetime(2026, 12, 2, 4, 0, 17, tzinfo=timezone.utc)


def test_folded_header_with_8bit_text():
    header = (
        "Received: from a.example (caf\u00e9 [192.0.2.1])\r\n"
        "\tby mx.example.test\r\n"
        "  (Postfix)\r\n"
        "\twith ESMTP id 4X\r\n"
        "\tfor <probe@example.test>;\r\n"
        "\tWed,  2 Dec 2026\r\n"
        "\t04:00:17 +0000 (UTC)\r\n"
        "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=probe@example.test\r\n"
        "Subject: x\r\n\r\n"
    ).encode()
    hops = read_hops(header, epoch("2026-12-02 04:00:15"))
    assert shape(hops) == [("mx.example.test", "ESMTP", 2.0, False, True)]


def test_forged_received_headers_below_the_receivers_results_are_claims():
    # the sender wrote two Received headers that name the receiver
    header = block(
        received("mailbox.example.test", "LMTP", "2026-12-02 04:00:20"),
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:19"),
        AR,
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:18", source="forged"),
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:16"),
        received("mx.example.test", "LMTP", "2026-12-02 04:00:15", source="forged"),
    )
    hops = read_hops(header, epoch("2026-12-02 04:00:15"))
    assert [(hop.by, hop.trusted) for hop in hops] == [
        ("mx.example.test", False),
        ("submit.example.test", False),
        ("mx.example.test", False),
        ("mx.example.test", True),
        ("mailbox.example.test", True),
    ]


def test_a_forged_results_header_below_the_receivers_does_not_move_the_line():
    forged = ("Authentication-Results", "mx.example.test; dkim=pass; spf=pass; dmarc=pass")
    header = block(
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:19"),
        AR,
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:16"),
        forged,
        received("origin.example.test", "ESMTPSA", "2026-12-02 04:00:15"),
    )
    for authserv_id in (None, "mx.example.test"):  # topmost; topmost carrying the id
        hops = read_hops(header, epoch("2026-12-02 04:00:15"), authserv_id)
        assert [hop.trusted for hop in hops] == [False, False, True], authserv_id


def test_with_authserv_id_only_a_header_carrying_it_draws_the_line():
    header = block(
        received("mailbox.example.test", "LMTP", "2026-12-02 04:00:20"),
        ("Authentication-Results", "other.example; spf=pass smtp.mailfrom=probe@example.test"),
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:19"),
        AR,
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:16"),
    )
    start = epoch("2026-12-02 04:00:15")
    assert [hop.trusted for hop in read_hops(header, start)] == [False, False, True]
    assert [hop.trusted for hop in read_hops(header, start, "mx.example.test")] == [False, True, True]
    assert [hop.trusted for hop in read_hops(header, start, "nobody.example")] == [False, False, False]


def test_without_the_receivers_results_nothing_is_trusted():
    header = block(
        received("mx.example.test", "ESMTP", "2026-12-02 04:00:19"),
        received("submit.example.test", "ESMTPSA", "2026-12-02 04:00:16"),
    )
    assert [hop.trusted for hop in read_hops(header, epoch("2026-12-02 04:00:15"))] == [False, False]
    assert read_hops(block(AR), 0.0) == ()


def test_500_received_headers_are_bounded():
    chain = [
        received(
            f"relay{number}.example", "ESMTP", f"2026-12-02 04:{number // 60 % 60:02d}:{number % 60:02d}"
        )
        for number in range(500, 0, -1)
    ]
    header = block(chain[0], AR, *chain[1:])
    started = time.monotonic()
    hops = read_hops(header, epoch("2026-12-02 04:00:00"))
    assert time.monotonic() - started < 1.0
    assert len(hops) == MAX_RECEIVED  # the newest ones, where the receiver's are
    assert hops[-1].by == "relay500.example" and hops[0].by == f"relay{500 - MAX_RECEIVED + 1}.example"
    assert [hop.trusted for hop in hops].count(True) == 1


def test_a_long_host_name_is_cut():
    header = block(("Received", f"from a by {'x' * 5000} with {'y' * 5000}; Wed, 02 Dec 2026 04:00:17 +0000"))
    (hop,) = read_hops(header, epoch("2026-12-02 04:00:15"))
    assert (len(hop.by), len(hop.protocol)) == (MAX_NAME, MAX_NAME)


# -- in the evaluation: perfdata, the first line, the -v table -------------------------
def _hop(by, protocol, seconds, trusted, skewed=False):
    return Hop(by, protocol, datetime(2026, 12, 2, 4, 0, 17, tzinfo=timezone.utc), seconds, skewed, trusted)


GREYLISTED = (
    _hop("localhost", "ESMTPSA", 0.0, False),
    _hop("mx.example.test", "ESMTP", 62.0, True),
    _hop("localhost", "LMTP", 0.0, True, skewed=True),
)


def with_hops(hops, roundtrip=75.21):
    result = delivered(roundtrip=roundtrip)
    return result._replace(arrival=result.arrival._replace(hops=hops))


def test_warning_names_the_slowest_trusted_hop_and_perfdata_has_both_labels():
    check = evaluate(with_hops(GREYLISTED), "-w", "60")
    assert check.state == Warn
    assert check.summary_str == (
        "roundtrip 75.210 s (outside range 0:60), slowest hop: 62 s before mx.example.test (ESMTP)"
    )
    assert (perfdata(check)["hop_max"], perfdata(check)["hops"]) == ("62.0s;;;0", "3;;;0")


def test_ok_and_other_problems_keep_their_first_line():
    assert evaluate(with_hops(GREYLISTED), "-w", "100").summary_str == (
        "round trip 75.210 s (INBOX, queued as 4ABC)"
    )
    slow_auth = with_hops(GREYLISTED)._replace(smtp=SmtpTimings(auth=1.5, total=1.6))
    assert evaluate(slow_auth, "-w", "100").summary_str == "smtp_auth 1.500 s (outside range 0:1)"
    # no hops (or none that took a second): the line as it always was
    for hops in ((), (_hop("mx.example.test", "ESMTP", 0.0, True),)):
        assert evaluate(with_hops(hops), "-w", "60").summary_str == "roundtrip 75.210 s (outside range 0:60)"


def test_only_claimed_hops_are_named_as_claims_and_give_no_hop_max():
    claimed = (_hop("submit.example.test", "ESMTPSA", 3.0, False), _hop("", "", 70.0, False))
    check = evaluate(with_hops(claimed), "-c", "70")
    assert check.state == Critical
    assert check.summary_str == (
        "roundtrip 75.210 s (outside range 0:70), slowest hop: 70 s before (no by), the sender side's claim"
    )
    assert "hop_max" not in perfdata(check) and perfdata(check)["hops"] == "2;;;0"


def test_the_hop_table_is_shown_from_v_on():
    assert not any("before" in line for line in evaluate(with_hops(GREYLISTED), "-w", "100").verbose_str)
    lines = evaluate(with_hops(GREYLISTED), "-w", "100", "-v").verbose_str
    table = lines[lines.index(next(line for line in lines if line.startswith("hops of the probe"))) :]
    assert table[1:4] == [
        "     0 s  before localhost (ESMTPSA)      claimed",
        "    62 s  before mx.example.test (ESMTP)  trusted",
        "     0 s  before localhost (LMTP)         trusted"
        "  clock skew: stamped before the previous hop, counted 0 s",
    ]
