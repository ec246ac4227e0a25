"""DNS on the running stack: the records to publish, the DNS check against the sandbox zone
(passing, and naming each broken record), the MTA-STS policy served over HTTPS, and DANE for
outbound mail in Postfix."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dns.rdatatype
import dns.zone
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailstack.mailauth.dnsrecords import txt
from tests.e2e.conftest import DOMAIN, HOSTNAME, PORTS, RunningStack
from tests.e2e.test_policy import from_sink, message, submit

pytestmark = pytest.mark.e2e

MTA_STS_HOST = f"mta-sts.{DOMAIN}"


def records_json(stack: RunningStack, *domain: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stack.cli("dns", "records", *domain, "--json").stdout)
    return result


def check_dns(stack: RunningStack, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = stack.cli("check", "dns", *args, "--json", check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["rows"]


def failed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["verdict"] == "FAIL"]


def test_dns_records_are_zone_file_lines_with_every_kind(stack: RunningStack) -> None:
    text = stack.cli("dns", "records").stdout
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    published: dict[str, list[str]] = {}
    for name, rdataset in zone.iterate_rdatasets():
        for rdata in rdataset:
            published.setdefault(dns.rdatatype.to_text(rdataset.rdtype), []).append(
                f"{name} {rdata.to_text()}"
            )
    assert {"MX", "A", "TXT", "SRV", "CNAME"} <= set(published)
    assert f"{DOMAIN}. 10 {HOSTNAME}." in published["MX"]
    texts = " ".join(published["TXT"])
    for tag in ("v=spf1", "v=DKIM1", "v=DMARC1", "v=STSv1", "v=TLSRPTv1"):
        assert tag in texts, f"no {tag} record in:\n{text}"
    services = " ".join(published["SRV"])
    for service in ("_submission._tcp", "_submissions._tcp", "_imaps._tcp"):
        assert f"{service}.{DOMAIN}." in services
    assert f"{MTA_STS_HOST}." in " ".join(published["A"])
    # The PTR is for the provider of the address, so it is a note, not a zone line.
    kinds = {r["kind"] for g in records_json(stack)["groups"] for r in g["records"]}
    assert "PTR" in kinds
    assert re.search(rf"^;\s+\S+\.in-addr\.arpa\. \d+ IN PTR {HOSTNAME}\.$", text, re.MULTILINE)


def test_dns_records_publish_the_key_rspamd_signs_with(stack: RunningStack) -> None:
    shown = json.loads(stack.cli("dkim", "show", DOMAIN, "--json").stdout)
    active = next(key for key in shown if key["active"])
    records = [r for g in records_json(stack, DOMAIN)["groups"] for r in g["records"]]
    dkim_records = {r["name"]: r for r in records if r["kind"] == "DKIM"}
    published = dkim_records[active["record_name"]]
    assert "".join(published["data"].split('"')[1::2]) == active["txt"]


def test_dns_records_refuse_a_domain_that_is_not_a_mail_domain(stack: RunningStack) -> None:
    result = stack.cli("dns", "records", "stranger.example", check=False)
    assert result.returncode == 2
    assert "stranger.example" in result.stderr and "not a mail domain" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_dns_passes_on_the_sandbox_domain(stack: RunningStack) -> None:
    code, rows = check_dns(stack, DOMAIN)
    assert code == 0, failed(rows)
    kinds = {row["kind"] for row in rows}
    expected = {"A", "PTR", "MX", "SPF", "DKIM", "DMARC", "MTA-STS", "MTA-STS policy"}
    assert expected | {"TLS-RPT", "SRV", "autoconfig"} <= kinds
    assert all(row["verdict"] == "pass" for row in rows), rows
    # The text form is a table plus a summary line.
    text = stack.cli("check", "dns", DOMAIN).stdout
    assert "checks passed" in text


def test_mta_sts_policy_is_served_over_https_with_sni(stack: RunningStack) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with (
        socket.create_connection(("127.0.0.1", PORTS["https"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=MTA_STS_HOST) as tls,
    ):
        tls.sendall(
            f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {MTA_STS_HOST}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        body = response.read()
    assert response.status == 200
    assert (response.getheader("Content-Type") or "").startswith("text/plain")
    lines = body.decode().split("\r\n")
    assert lines[0] == "version: STSv1"
    assert "mode: testing" in lines and f"mx: {HOSTNAME}" in lines
    max_age = int(next(line for line in lines if line.startswith("max_age: ")).split(": ")[1])
    assert max_age >= 7 * 86400
    # The _mta-sts id is derived from the policy text: a changed policy gets a new id.
    records = [r for g in records_json(stack, DOMAIN)["groups"] for r in g["records"]]
    sts = next(r for r in records if r["kind"] == "MTA-STS")
    assert f"id={hashlib.sha256(body).hexdigest()[:20]}" in sts["data"]


def postconf_value(stack: RunningStack, name: str) -> str:
    out = stack.compose("exec", "-T", "postfix", "postconf", "-h", name).stdout
    return out.decode().strip()


def test_postfix_uses_dane_and_outbound_mail_still_flows(stack: RunningStack) -> None:
    assert postconf_value(stack, "smtp_tls_security_level") == "dane"
    assert postconf_value(stack, "smtp_dns_support_level") == "dnssec"
    # glibc passes the resolver's AD bit (DNSSEC validated) to Postfix only with trust-ad.
    resolv = stack.compose("exec", "-T", "postfix", "cat", "/etc/resolv.conf").stdout.decode()
    assert "trust-ad" in resolv, resolv
    check = stack.compose("exec", "-T", "postfix", "postfix", "check", check=False)
    assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
    # The sink's name is in no signed zone: DANE falls back to opportunistic TLS, mail flows.
    sender, password = stack.new_mailbox()
    subject = f"e2e dane fallback {uuid.uuid4().hex}"
    submit(stack, sender, password, message(sender, "friend@elsewhere.example", subject))
    assert subject.encode() in from_sink(stack, subject)


def test_check_dns_fails_for_a_domain_without_records(stack: RunningStack) -> None:
    domain = f"bare-{uuid.uuid4().hex[:8]}.example.test"
    stack.cli("domain", "add", domain)
    code, rows = check_dns(stack, domain)
    assert code == 1
    broken = {row["kind"] for row in failed(rows) if row["group"] == domain}
    assert {"MX", "SPF", "DMARC", "MTA-STS", "TLS-RPT", "SRV"} <= broken
    # domain add made its DKIM key and the sandbox zone publishes it: that row passes.
    assert all(row["verdict"] == "pass" for row in rows if row["kind"] == "DKIM")


def reload_resolver(stack: RunningStack) -> None:
    """Unbound re-reads its configuration (the sandbox zone) without a restart."""
    stack.compose(
        "exec", "-T", "resolver", "unbound-control", "-c", "/etc/mailstack/resolver/unbound.conf",
        "reload",
    )  # fmt: skip


def reload_front(stack: RunningStack) -> None:
    stack.compose(
        "exec", "-T", "front", "nginx", "-c", "/etc/mailstack/front/nginx.conf", "-s", "reload"
    )  # fmt: skip
    time.sleep(1)  # the master starts new workers and retires the old ones


def restart_mta_sts(stack: RunningStack) -> None:
    stack.compose("restart", "mta-sts")
    stack.compose("up", "--detach", "--no-deps", "--wait", "mta-sts")


@pytest.fixture
def broken_zone(stack: RunningStack) -> Iterator[None]:
    """The sandbox zone with a wrong DKIM key, no DMARC record and an SPF of 11 lookups."""
    path = stack.root / "config" / "resolver" / "unbound.conf"
    original = path.read_text()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrong_key = txt(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")
    eleven = " ".join(f"a:host{n}.{DOMAIN}" for n in range(11))
    lines = []
    for line in original.splitlines():
        edited = line
        if f"._domainkey.{DOMAIN}. " in line:
            name = line.split("'")[1].split()[0]
            edited = f"    local-data: '{name} 300 IN TXT {wrong_key}'"
        elif line.strip().startswith(f"local-data: '_dmarc.{DOMAIN}. "):
            continue
        elif line.strip() == f"local-data: '{DOMAIN}. 300 IN TXT \"v=spf1 mx -all\"'":
            edited = f"    local-data: '{DOMAIN}. 300 IN TXT \"v=spf1 {eleven} -all\"'"
        lines.append(edited)
    path.write_text("\n".join(lines) + "\n")
    try:
        reload_resolver(stack)
        yield
    finally:
        path.write_text(original)
        reload_resolver(stack)


def test_check_dns_names_each_broken_record(stack: RunningStack, broken_zone: None) -> None:
    code, rows = check_dns(stack, DOMAIN)
    assert code == 1
    broken = {(row["kind"], row["name"]) for row in failed(rows)}
    assert {kind for kind, _ in broken} == {"DKIM", "DMARC", "SPF"}, failed(rows)
    assert ("DMARC", f"_dmarc.{DOMAIN}") in broken
    assert ("SPF", DOMAIN) in broken
    by_kind = {row["kind"]: row for row in failed(rows)}
    assert "a different key" in by_kind["DKIM"]["found"]
    assert "11 DNS lookups" in by_kind["SPF"]["found"]
    assert by_kind["DMARC"]["found"] == "none"
    # The text form names each failure with its one-line fix.
    result = stack.cli("check", "dns", DOMAIN, check=False)
    assert result.returncode == 1
    fixes = [line for line in result.stdout.splitlines() if line.startswith("FAIL: ")]
    assert len(fixes) == 3, result.stdout
    assert any(f"_dmarc.{DOMAIN}" in line and "publish:" in line for line in fixes)


def policy_for(stack: RunningStack, domain: str) -> tuple[int, str]:
    """Ask the mta-sts service what Postfix asks it: (postmap's exit status, the answer)."""
    result = stack.compose(
        "exec",
        "-T",
        "postfix",
        "postmap",
        "-q",
        domain,
        "socketmap:inet:mta-sts:8461:postfix",
        check=False,
    )
    return result.returncode, result.stdout.decode().strip()


@pytest.fixture
def enforcing(stack: RunningStack) -> Iterator[None]:
    """The stack's own policy switched to mode enforce, as an operator does it."""
    path = stack.root / "mailstack.yaml"
    original = path.read_text()
    settings = yaml.safe_load(original)
    settings.setdefault("dns", {})["mta_sts_mode"] = "enforce"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    try:
        stack.cli("render")
        reload_front(stack)
        reload_resolver(stack)
        restart_mta_sts(stack)  # forget the cached testing policy
        yield
    finally:
        path.write_text(original)
        stack.cli("render")
        reload_front(stack)
        reload_resolver(stack)
        restart_mta_sts(stack)  # forget the cached enforce policy


def test_outbound_mta_sts_leaves_testing_policies_alone(stack: RunningStack) -> None:
    assert postconf_value(stack, "smtp_tls_policy_maps") == "socketmap:inet:mta-sts:8461:postfix"
    # Mode testing only reports (RFC 8461): Postfix gets no policy and keeps DANE/may.
    assert policy_for(stack, DOMAIN) == (1, "")
    assert policy_for(stack, "no-policy.example.test") == (1, "")


def test_outbound_mta_sts_enforces_an_enforce_policy(stack: RunningStack, enforcing: None) -> None:
    served = records_json(stack, DOMAIN)
    sts = next(r for g in served["groups"] for r in g["records"] if r["kind"] == "MTA-STS")
    assert "mode enforce" in sts["note"]
    code, rows = check_dns(stack, DOMAIN)
    assert code == 0, failed(rows)
    # The policy resolver fetched https://mta-sts.example.test/ (the stack CA) and tells
    # Postfix to require a verified certificate for the policy's MX.
    status, answer = policy_for(stack, DOMAIN)
    assert status == 0, answer
    assert answer.startswith("secure") and f"match={HOSTNAME}" in answer
