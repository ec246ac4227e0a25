"""SPF, DMARC, MTA-STS and TLS-RPT syntax, and the SPF DNS-lookup count."""

from __future__ import annotations

import pytest

from mailstack.errors import ConfigError
from mailstack.mailauth.policy import (
    MtaStsPolicy,
    PolicySyntaxError,
    count_spf_lookups,
    parse_dmarc,
    parse_mta_sts_policy,
    parse_mta_sts_txt,
    parse_spf,
    parse_tls_rpt,
)
from mailstack.stack.config import validate_config

BASE = {"hostname": "mail.example.org", "domain": "example.org"}


# --- SPF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 mx -all",
        "v=spf1 a mx ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.net ~all",
        "v=spf1 a:mail.example.org/28 mx/24 ?all",
        "v=spf1 redirect=_spf.example.org",
        "v=spf1 exists:%{i}._spf.example.org -all",
        "V=SPF1 MX -ALL",
        "v=spf1",
    ],
)
def test_valid_spf_records_parse(record: str) -> None:
    parse_spf(record)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=spf2 mx -all", "v=spf1"),
        ("spf1 mx", "v=spf1"),
        ("v=spf1 mx foo -all", "unknown mechanism"),
        ("v=spf1 ip4:300.1.1.1 -all", "not an ip4"),
        ("v=spf1 ip4:2001:db8::1 -all", "not an ip4"),
        ("v=spf1 include: -all", "needs a domain"),
        ("v=spf1 a: -all", "empty domain"),
        ("v=spf1 include -all", "needs a domain"),
        ("v=spf1 all:x", "takes no value"),
        ("v=spf1 redirect=a.example redirect=b.example", "twice"),
        ("v=spf1 a/33 -all", "prefix length"),
    ],
)
def test_broken_spf_records_say_why(record: str, reason: str) -> None:
    with pytest.raises(PolicySyntaxError, match=reason):
        parse_spf(record)


def test_spf_lookups_are_counted_through_includes_and_redirects() -> None:
    published = {
        "a.example": "v=spf1 include:b.example mx a -all",  # 3 (+ b)
        "b.example": "v=spf1 ip4:192.0.2.1 exists:x.example redirect=c.example",  # 2 (+ c)
        "c.example": "v=spf1 ptr -all",  # 1
    }
    record = parse_spf("v=spf1 mx include:a.example -all")  # 2 (+ a)
    assert count_spf_lookups(record, published.get) == 2 + 3 + 2 + 1


def test_eleven_lookups_are_over_the_limit() -> None:
    record = parse_spf("v=spf1 " + " ".join(f"a:h{n}.example.org" for n in range(11)) + " -all")
    assert count_spf_lookups(record, lambda _: None) == 11


def test_ip_mechanisms_and_all_cost_no_lookup() -> None:
    record = parse_spf("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
    assert count_spf_lookups(record, lambda _: None) == 0


def test_an_include_loop_stops_past_the_limit() -> None:
    loop = {"a.example": "v=spf1 include:b.example", "b.example": "v=spf1 include:a.example"}
    assert count_spf_lookups(parse_spf("v=spf1 include:a.example"), loop.get) > 10


def test_an_include_without_spf_record_is_a_permerror() -> None:
    with pytest.raises(PolicySyntaxError, match=r"nothing\.example"):
        count_spf_lookups(parse_spf("v=spf1 include:nothing.example -all"), lambda _: None)


# --- DMARC -----------------------------------------------------------------------------------


def test_dmarc_record_parses_policy_and_report_addresses() -> None:
    record = parse_dmarc(
        "v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s; aspf=r; fo=1:d; ri=86400; "
        "rua=mailto:dmarc@example.org,mailto:Agg@Reports.example.net!10m; "
        "ruf=mailto:forensic@example.org;"
    )
    assert record.policy == "reject"
    assert record.subdomain_policy == "quarantine"
    assert record.rua == ("dmarc@example.org", "agg@reports.example.net")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("p=reject; v=DMARC1", "v=DMARC1"),
        ("v=DMARC2; p=none", "v=DMARC1"),
        ("v=DMARC1", "no p="),
        ("v=DMARC1; p=block", "not none, quarantine or reject"),
        ("v=DMARC1; p=none; sp=maybe", "sp=maybe"),
        ("v=DMARC1; p=none; pct=101", "pct=101"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; rua=dmarc@example.org", "not a mailto"),
        ("v=DMARC1; p=none; p=reject", "repeats"),
        ("v=DMARC1; p=none; junk", "tag=value"),
        ("v=DMARC1; p=none; fo=2", "fo=2"),
    ],
)
def test_broken_dmarc_records_say_why(record: str, reason: str) -> None:
    with pytest.raises(PolicySyntaxError, match=reason):
        parse_dmarc(record)


# --- MTA-STS and TLS-RPT -------------------------------------------------------------------


def test_policy_text_round_trips_with_crlf_and_its_id_follows_the_text() -> None:
    policy = MtaStsPolicy("enforce", ("mail.example.org",), 604800)
    assert policy.text == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
    )
    assert parse_mta_sts_policy(policy.text) == policy
    testing = MtaStsPolicy("testing", ("mail.example.org",), 604800)
    assert policy.policy_id != testing.policy_id
    assert policy.policy_id == MtaStsPolicy("enforce", ("mail.example.org",), 604800).policy_id
    assert parse_mta_sts_txt(f"v=STSv1; id={policy.policy_id}") == policy.policy_id


def test_policy_mx_patterns_cover_hosts_like_senders_match_them() -> None:
    policy = MtaStsPolicy("enforce", ("mail.example.org", "*.mx.example.net"), 86400)
    assert policy.covers("MAIL.example.org.")
    assert policy.covers("a.mx.example.net")
    assert not policy.covers("a.b.mx.example.net")
    assert not policy.covers("mx.example.net")
    assert not policy.covers("other.example.org")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mode: enforce\nmx: a.example\nmax_age: 86400\n", "version"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 86400\n", "mode"),
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "mx line"),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 86400\n", "host name"),
        ("version: STSv1\n<html>\n", "key: value"),
    ],
)
def test_broken_policies_say_why(text: str, reason: str) -> None:
    with pytest.raises(PolicySyntaxError, match=reason):
        parse_mta_sts_policy(text)


def test_tls_rpt_record_lists_mailto_and_https_destinations() -> None:
    found = parse_tls_rpt("v=TLSRPTv1; rua=mailto:TLS@example.org,https://reports.example.net/tls")
    assert found == ("tls@example.org", "https://reports.example.net/tls")
    with pytest.raises(PolicySyntaxError, match="rua"):
        parse_tls_rpt("v=TLSRPTv1;")
    with pytest.raises(PolicySyntaxError, match="mailto"):
        parse_tls_rpt("v=TLSRPTv1; rua=ftp://x.example")


# --- the dns section of mailstack.yaml --------------------------------------------------------


@pytest.mark.parametrize(
    ("dns", "key", "words"),
    [
        ({"spf": "v=spf1 mx bogus -all"}, "dns.spf", "unknown mechanism"),
        ({"spf": 'v=spf1 mx" -all'}, "dns.spf", "quotes"),
        ({"spf": "v=spf1 mx\n-all"}, "dns.spf", "control character"),
        ({"dmarc_policy": "block"}, "dns.dmarc_policy", "none, quarantine, reject"),
        ({"dmarc_rua": "it's@example.org"}, "dns.dmarc_rua", "plain mail address"),
        ({"tls_rpt_rua": "not-an-address"}, "dns.tls_rpt_rua", "mail address"),
        ({"mta_sts_mode": "on"}, "dns.mta_sts_mode", "enforce, testing, none"),
        ({"mta_sts_max_age": 3600}, "dns.mta_sts_max_age", "at least 604800"),
        ({"public_ipv4": "2001:db8::1"}, "dns.public_ipv4", "IPv4"),
        ({"public_ipv6": "192.0.2.1"}, "dns.public_ipv6", "IPv6"),
        ({"spf_record": "v=spf1 -all"}, "dns.spf_record", "is not a known key"),
    ],
)
def test_bad_dns_settings_name_the_key_and_what_is_allowed(
    dns: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({**BASE, "dns": dns})
    assert key in caught.value.message and words in caught.value.message


def test_dns_defaults_are_what_a_careful_operator_publishes() -> None:
    config = validate_config(BASE).dns
    assert config.spf == "v=spf1 mx -all"
    assert config.dmarc_policy == "quarantine"
    # testing until the certificate is publicly trusted: enforce would make senders refuse.
    assert config.mta_sts_mode == "testing"
    assert config.mta_sts_max_age >= 7 * 86400
