"""The DNS blocklist item of `check health` (runtime.blocklists): the names asked (IPv4
reversed, IPv6 by nibbles), each answer judged (listed, not listed, Spamhaus's error codes,
answers that are no verdict), and drill's output read back per name."""

from __future__ import annotations

import pytest

from mailstack.runtime import blocklists, healthprobes
from mailstack.runtime.blocklists import BLOCKLISTS, Answer, classify, judge, query_name
from mailstack.verdict import FAIL, PASS, WARN

ZEN, SPAMCOP, BARRACUDA = BLOCKLISTS


def test_an_ipv4_address_is_asked_with_its_octets_reversed() -> None:
    assert query_name("192.0.2.10", "zen.spamhaus.org") == "10.2.0.192.zen.spamhaus.org"


def test_an_ipv6_address_is_asked_with_its_32_nibbles_reversed() -> None:
    name = query_name("2001:db8::1", "zen.spamhaus.org")
    nibbles = name.removesuffix(".zen.spamhaus.org").split(".")
    assert len(nibbles) == 32
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.zen.spamhaus.org"


def test_ipv6_is_asked_only_of_the_lists_that_cover_it() -> None:
    asked = blocklists.queries(["192.0.2.10", "2001:db8::1"])
    assert [(address, item.zone) for address, item, _ in asked] == [
        ("192.0.2.10", "zen.spamhaus.org"),
        ("192.0.2.10", "bl.spamcop.net"),
        ("192.0.2.10", "b.barracudacentral.org"),
        ("2001:db8::1", "zen.spamhaus.org"),
    ]


@pytest.mark.parametrize(
    ("answer", "state", "why"),
    [
        (Answer("NXDOMAIN"), "clean", ""),
        (Answer("NOERROR"), "clean", ""),  # no A record: not listed
        (Answer("NOERROR", ("127.0.0.2",)), "listed", "127.0.0.2: SBL"),
        (Answer("NOERROR", ("127.0.0.4", "127.0.0.11")), "listed",
         "127.0.0.4: XBL, 127.0.0.11: PBL (Spamhaus)"),
        (Answer("NOERROR", ("127.0.0.99",)), "listed", "127.0.0.99: listed"),
        # Spamhaus's errors about the query itself: never a listing.
        (Answer("NOERROR", ("127.255.255.254",)), "error",
         "127.255.255.254 (the query came through a public or open resolver)"),
        (Answer("NOERROR", ("127.255.255.255",)), "error", "127.255.255.255 (too many queries)"),
        (Answer("NOERROR", ("127.255.255.252",)), "error",
         "127.255.255.252 (a typing error in the DNSBL name)"),
        (Answer("NOERROR", ("127.255.255.250",)), "error",
         "127.255.255.250 (an error code, not a listing)"),
        (Answer("NOERROR", ("127.0.0.2", "127.255.255.254")), "error",
         "127.255.255.254 (the query came through a public or open resolver)"),
        (Answer("NOERROR", ("198.51.100.7",)), "error",
         "198.51.100.7 is not a blocklist answer (a rewritten NXDOMAIN?)"),
        (Answer("SERVFAIL"), "error", "SERVFAIL"),
        (Answer("REFUSED"), "error", "REFUSED"),
        (Answer(""), "error", "no answer"),
    ],
)  # fmt: skip
def test_each_answer_is_judged_by_the_return_code_conventions(
    answer: Answer, state: str, why: str
) -> None:
    found = classify(ZEN, answer)
    assert (found.state, found.why) == (state, why)


def test_other_lists_name_their_own_listing() -> None:
    assert (
        classify(BARRACUDA, Answer("NOERROR", ("127.0.0.2",))).why == "127.0.0.2: poor reputation"
    )
    assert classify(SPAMCOP, Answer("NOERROR", ("127.0.0.2",))).why == "127.0.0.2: listed"


def _answers(address: str, **by_zone: Answer) -> dict[str, Answer]:
    return {
        query_name(address, item.zone): by_zone.get(item.zone.split(".")[0], Answer("NXDOMAIN"))
        for item in BLOCKLISTS
    }


def test_an_address_on_no_list_passes() -> None:
    item = judge(["192.0.2.10"], _answers("192.0.2.10"))
    assert item.verdict == PASS
    assert item.detail == "192.0.2.10 on none of Spamhaus ZEN, SpamCop, Barracuda"


def test_a_listing_fails_naming_the_address_the_list_and_its_meaning() -> None:
    item = judge(["192.0.2.10"], _answers("192.0.2.10", bl=Answer("NOERROR", ("127.0.0.2",))))
    assert item.verdict == FAIL
    assert item.detail == "listed: 192.0.2.10 on SpamCop (127.0.0.2: listed)"
    assert "removal" in item.fix


def test_an_error_code_warns_and_is_never_a_listing() -> None:
    refused = Answer("NOERROR", ("127.255.255.254",))
    item = judge(["192.0.2.10"], _answers("192.0.2.10", zen=refused))
    assert item.verdict == WARN
    assert item.detail.startswith("1 of 3 lookups gave no verdict: zen.spamhaus.org for ")
    assert "not a listing" in item.fix


def test_a_missing_answer_warns() -> None:
    answers = _answers("192.0.2.10")
    del answers[query_name("192.0.2.10", "bl.spamcop.net")]
    item = judge(["192.0.2.10"], answers)
    assert item.verdict == WARN and "bl.spamcop.net for 192.0.2.10: no answer" in item.detail


def test_a_listing_outweighs_an_error() -> None:
    answers = _answers("192.0.2.10", zen=Answer("NOERROR", ("127.0.0.4",)), b=Answer("SERVFAIL"))
    assert judge(["192.0.2.10"], answers).verdict == FAIL


def test_no_public_address_warns_naming_the_keys() -> None:
    item = judge([], {})
    assert item.verdict == WARN and "dns.public_ipv4" in item.fix


def test_drill_output_is_read_back_per_name() -> None:
    listed, clean = "2.0.0.127.zen.spamhaus.org", "2.0.0.127.bl.spamcop.net"
    output = "\n".join([
        f"{listed} ;; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 1",
        f"{clean} ;; ->>HEADER<<- opcode: QUERY, rcode: NXDOMAIN, id: 2",
        f"{listed} ;; {listed}.\tIN\tA",  # the question section: not an answer
        f"{listed} {listed}.\t2100\tIN\tA\t127.0.0.2",
        f"{listed} {listed}.\t2100\tIN\tA\t127.0.0.10",
        f"{clean} zen.spamhaus.org.\t10\tIN\tSOA\tneed.to.know.only. hostmaster. 1 3600 600 432000 10",
        "stray line from nowhere",
    ])  # fmt: skip
    found = healthprobes.parse_drill_answers(output, [listed, clean, "9.9.9.9.bl.spamcop.net"])
    assert found == {
        listed: Answer("NOERROR", ("127.0.0.2", "127.0.0.10")),
        clean: Answer("NXDOMAIN"),
    }
