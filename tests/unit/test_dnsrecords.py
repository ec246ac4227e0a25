"""The records to publish (pure generation) and the DNS check's verdicts on a zone that
serves exactly them, or them with one record broken."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.mailauth import dkim
from mailstack.mailauth.dnscheck import Lookup, check_dns
from mailstack.mailauth.dnsrecords import (
    certificate_names,
    mta_sts_policy,
    record_set,
    sandbox_zone,
)
from mailstack.stack.config import Config, validate_config
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.verdict import FAIL, PASS

NOW = datetime.datetime(2026, 3, 14, tzinfo=datetime.UTC)
PRODUCTION: dict[str, Any] = {
    "hostname": "mail.example.org",
    "domain": "example.org",
    "dns": {"public_ipv4": "203.0.113.25"},
}


def config(**dns: Any) -> Config:
    return validate_config({**PRODUCTION, "dns": {**PRODUCTION["dns"], **dns}})


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(";")]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[dkim.DkimKey, ...]:
    dkim.ensure_key(tmp_path, "example.org", now=NOW)
    dkim.ensure_key(tmp_path, "shop.example.org", now=NOW)
    return tuple(dkim.load_keys(tmp_path))


def test_every_kind_of_record_is_listed_for_each_domain(keys: tuple[dkim.DkimKey, ...]) -> None:
    text = str(record_set(config(), ["example.org", "shop.example.org"], keys))
    published = lines(text)
    assert "mail.example.org. 3600 IN A 203.0.113.25 ; the mail server's address" in published
    for domain in ("example.org", "shop.example.org"):
        zone = [line.split(" ; ")[0] for line in published]
        assert f"{domain}. 3600 IN MX 10 mail.example.org." in zone
        assert f'{domain}. 3600 IN TXT "v=spf1 mx -all"' in zone
        assert (
            f'_dmarc.{domain}. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"'
        ) in zone
        assert f"mta-sts.{domain}. 3600 IN A 203.0.113.25" in zone
        assert (
            f'_smtp._tls.{domain}. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@{domain}"'
        ) in zone
        assert f"_submissions._tcp.{domain}. 3600 IN SRV 0 1 465 mail.example.org." in zone
        assert f"_submission._tcp.{domain}. 3600 IN SRV 0 1 587 mail.example.org." in zone
        assert f"_imaps._tcp.{domain}. 3600 IN SRV 0 1 993 mail.example.org." in zone
        assert f"autoconfig.{domain}. 3600 IN CNAME mail.example.org." in zone
        key = next(key for key in keys if key.domain == domain)
        assert f"{key.record_name}. 3600 IN TXT {key.zone_data}" in zone
    # The PTR is the provider's to set: a note with the reversed address, not a zone line.
    assert ";   25.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.org." in text.splitlines()


def test_the_output_parses_as_a_zone_file(keys: tuple[dkim.DkimKey, ...]) -> None:
    text = str(record_set(config(), ["example.org"], keys))
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    types = {dns.rdatatype.to_text(rdataset.rdtype) for _, rdataset in zone.iterate_rdatasets()}
    assert types == {"A", "MX", "TXT", "SRV", "CNAME"}


def test_unknown_addresses_are_commented_placeholders_naming_the_key() -> None:
    text = str(record_set(validate_config({**PRODUCTION, "dns": {}}), ["example.org"], ()))
    assert not any("<public" in line for line in lines(text))
    placeholders = [line for line in text.splitlines() if "<public IPv4 address>" in line]
    assert len(placeholders) == 2  # the hostname and mta-sts.example.org
    assert all("dns.public_ipv4" in line for line in placeholders)


def test_ipv6_adds_aaaa_records_and_an_ipv6_ptr() -> None:
    text = str(record_set(config(public_ipv6="2001:db8::25"), ["example.org"], ()))
    assert "mail.example.org. 3600 IN AAAA 2001:db8::25 ; the mail server's IPv6 address" in text
    assert "mta-sts.example.org. 3600 IN AAAA 2001:db8::25" in text
    assert "ip6.arpa. 3600 IN PTR mail.example.org." in text


def test_spf_and_dmarc_come_from_mailstack_yaml() -> None:
    custom = config(
        spf="v=spf1 mx include:_spf.example.net -all",
        dmarc_policy="reject",
        dmarc_rua="dmarc@reports.example.net",
        tls_rpt_rua="tls@example.org",
    )
    text = str(record_set(custom, ["example.org"], ()))
    assert 'example.org. 3600 IN TXT "v=spf1 mx include:_spf.example.net -all"' in text
    assert '"v=DMARC1; p=reject; rua=mailto:dmarc@reports.example.net"' in text
    # Reports to another domain need that domain's consent (RFC 7489 7.1).
    assert 'example.org._report._dmarc.reports.example.net. 3600 IN TXT "v=DMARC1"' in text
    assert '"v=TLSRPTv1; rua=mailto:tls@example.org"' in text


def test_the_mta_sts_id_changes_with_the_policy() -> None:
    def sts_line(settings: Config) -> str:
        text = str(record_set(settings, ["example.org"], ()))
        return next(line for line in text.splitlines() if line.startswith("_mta-sts."))

    assert sts_line(config()) == sts_line(config())
    assert sts_line(config()) != sts_line(config(mta_sts_mode="enforce"))
    assert sts_line(config()) != sts_line(config(mta_sts_max_age=1209600))
    assert mta_sts_policy(config()).mx == ("mail.example.org",)


def test_the_front_serves_the_policy_and_its_certificate_names_the_host() -> None:
    rendered = render_stack(RenderInputs(config(mta_sts_mode="enforce"), "1"))
    nginx = rendered["config/front/nginx.conf"].decode()
    assert "server_name mta-sts.example.org;" in nginx
    assert (
        'return 200 "version: STSv1\\r\\nmode: enforce\\r\\nmx: mail.example.org\\r\\n'
        'max_age: 604800\\r\\n";'
    ) in nginx
    assert "mta-sts.example.org" in certificate_names(config())


def test_the_front_answers_only_the_names_of_its_domains_and_421_for_any_other(
    keys: tuple[dkim.DkimKey, ...],
) -> None:
    nginx = render_stack(RenderInputs(config(), "1", dkim_keys=keys))[
        "config/front/nginx.conf"
    ].decode()
    assert "server_name mta-sts.example.org mta-sts.shop.example.org;" in nginx
    assert (
        "server_name autoconfig.example.org autodiscover.example.org "
        "autoconfig.shop.example.org autodiscover.shop.example.org;"
    ) in nginx
    default = nginx.split("listen 443 ssl http2 default_server;")[1].split("server {")[0]
    assert "server_name _;" in default and "return 421;" in default
    assert "~^" not in nginx  # no pattern that would take any name


def test_the_sandbox_zone_serves_what_dns_records_prints(
    reference_config: Config, keys: tuple[dkim.DkimKey, ...]
) -> None:
    unbound = render_stack(RenderInputs(reference_config, "1", dkim_keys=keys))[
        "config/resolver/unbound.conf"
    ].decode()
    for name, rtype, data in sandbox_zone(reference_config, keys):
        assert f"local-data: '{name}. 300 IN {rtype} {data}'" in unbound
    printed = record_set(reference_config, [reference_config.domain], keys).records
    zone = sandbox_zone(reference_config, keys)
    served = {(name, rtype) for name, rtype, _ in zone}
    # Aliases of the hostname are served flattened: the hostname's own address instead.
    aliases = {(r.name, r.type) for r in printed if r.type == "CNAME"}
    assert aliases and {(r.name, r.type) for r in printed} - aliases <= served
    host = {
        data for name, rtype, data in zone if name == reference_config.hostname and rtype == "A"
    }
    for name, _ in aliases:
        assert {data for owner, rtype, data in zone if owner == name and rtype == "A"} == host
    # Keys of domains added later are served too (their records are `dns records D`), and
    # their web names, which the stack's certificate covers.
    assert all((key.record_name, "TXT") in served for key in keys)
    others = [key.domain for key in keys if key.domain != reference_config.domain]
    assert others
    assert all((name, "A") in served for name in certificate_names(reference_config, others))


def test_the_production_render_serves_no_zone(keys: tuple[dkim.DkimKey, ...]) -> None:
    unbound = render_stack(RenderInputs(config(), "1", dkim_keys=keys))
    assert "local-data" not in unbound["config/resolver/unbound.conf"].decode()


# --- the check's verdicts, against a zone parsed from zone-file text -------------------------


class ZoneLookup(Lookup):
    """Answers from a zone parsed by dnspython, as an authoritative server holding it would."""

    def __init__(self, text: str, *, signed: bool = False) -> None:
        super().__init__("192.0.2.53")
        self.zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
        self.signed = signed  # a validating resolver's AD bit on every answer

    def validated_records(self, name: str, rtype: str) -> tuple[list[str], bool]:
        rdataset = self.zone.get_rdataset(dns.name.from_text(name), rtype)
        if rdataset is None:
            return [], False
        if rtype == "TXT":
            return [b"".join(rdata.strings).decode() for rdata in rdataset], self.signed
        return sorted(rdata.to_text() for rdata in rdataset), self.signed


def served(settings: Config, keys: tuple[dkim.DkimKey, ...]) -> str:
    """What a correct zone holds: every record, the provider's PTR included."""
    records = record_set(settings, ["example.org"], keys).records
    return "\n".join(record.zone_line for record in records) + "\n"


def policy_fetch(settings: Config) -> Any:
    return lambda host, address: (200, "text/plain", mta_sts_policy(settings).text)


def judge(text: str, keys: tuple[dkim.DkimKey, ...], settings: Config | None = None) -> Any:
    settings = settings or config()
    return check_dns(
        settings,
        ["example.org"],
        keys,
        ZoneLookup(text),
        policy_fetch(settings),
        own_ca=False,
    )


def test_a_zone_with_every_record_passes(keys: tuple[dkim.DkimKey, ...]) -> None:
    report = judge(served(config(), keys), keys)
    assert report.ok, report.failures
    assert {row.verdict for row in report.rows} == {PASS}
    assert {"A", "SPF", "PTR", "MX", "DKIM", "DMARC", "MTA-STS", "MTA-STS policy"} <= {
        row.kind for row in report.rows
    }


def test_each_broken_record_is_named_with_its_fix(keys: tuple[dkim.DkimKey, ...]) -> None:
    other = dkim.DkimKey(
        "example.org", "x", "rsa", 2048, "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIB", True
    )
    good = served(config(), keys)
    key = next(key for key in keys if key.domain == "example.org")
    eleven = " ".join(f"a:h{n}.example.org" for n in range(11))
    broken = (
        good.replace(key.zone_data, f'"{other.txt}"')
        .replace('"v=spf1 mx -all"', f'"v=spf1 {eleven} -all"')
        .replace("_dmarc.example.org.", "_dmarc-gone.example.org.")
    )
    report = judge(broken, keys)
    assert not report.ok
    failures = {row.kind: row for row in report.failures}
    assert set(failures) == {"DKIM", "SPF", "DMARC"}
    assert "a different key" in failures["DKIM"].found
    assert "11 DNS lookups" in failures["SPF"].found
    assert failures["DMARC"].found == "none"
    assert failures["DMARC"].fix.startswith("publish: _dmarc.example.org. 3600 IN TXT")


def test_a_stale_mta_sts_id_and_a_wrong_ptr_fail(keys: tuple[dkim.DkimKey, ...]) -> None:
    old = served(config(mta_sts_mode="enforce"), keys)  # the policy it announced before
    now = served(config(), keys)
    sts_old = next(line for line in old.splitlines() if line.startswith("_mta-sts."))
    sts_now = next(line for line in now.splitlines() if line.startswith("_mta-sts."))
    text = now.replace(sts_now, sts_old).replace(
        "IN PTR mail.example.org.", "IN PTR host.isp.example."
    )
    failures = {row.kind: row for row in judge(text, keys).failures}
    assert set(failures) == {"MTA-STS", "PTR"}
    assert "old id" in failures["MTA-STS"].found
    assert "ask the provider of 203.0.113.25" in failures["PTR"].fix


def test_a_policy_that_does_not_cover_the_mx_fails(keys: tuple[dkim.DkimKey, ...]) -> None:
    settings = config()
    report = check_dns(
        settings,
        ["example.org"],
        keys,
        ZoneLookup(served(settings, keys)),
        lambda host, address: (
            200,
            "text/plain",
            "version: STSv1\r\nmode: testing\r\nmx: other.example.net\r\nmax_age: 604800\r\n",
        ),
        own_ca=False,
    )
    [failure] = report.failures
    assert failure.kind == "MTA-STS policy" and failure.verdict == FAIL
    assert "does not cover the MX mail.example.org" in failure.found


# --- the command line ---------------------------------------------------------------------


def test_dns_records_cli_prints_the_first_domain_when_the_stack_is_down(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "stack"
    init = runner.invoke(
        app,
        ["init", "--non-interactive", "--hostname", "mail.example.test", "--domain",
         "example.test", "--dir", str(root)],
    )  # fmt: skip
    assert init.exit_code == 0, init.output
    # A project of its own: no running stack of this machine is asked for its domains.
    settings = root / "mailstack.yaml"
    settings.write_text(
        settings.read_text().replace("project: mailstack", f"project: unit-{uuid.uuid4().hex[:12]}")
    )
    result = runner.invoke(app, ["dns", "records", "--dir", str(root)])
    assert result.exit_code == 0, result.output
    assert "example.test. 3600 IN MX 10 mail.example.test." in result.output
    assert "only the domain of mailstack.yaml is listed" in result.output
    bad = runner.invoke(app, ["dns", "records", "not a domain", "--dir", str(root)])
    assert bad.exit_code == 2 and "DOMAIN" in bad.output
    other = runner.invoke(app, ["dns", "records", "other.test", "--dir", str(root)])
    assert other.exit_code == 2 and "not a mail domain" in other.output
    resolver = runner.invoke(app, ["check", "dns", "--resolver", "dns.example", "--dir", str(root)])
    assert resolver.exit_code == 2 and "--resolver" in resolver.output
