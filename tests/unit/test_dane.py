"""DANE for inbound mail: the TLSA records judged, printed and checked, the server key kept
across renewals, and the next key's rollover refused until DNS serves its record."""

from __future__ import annotations

import dataclasses
import datetime
import stat
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack.errors import UsageError
from mailstack.images import builder
from mailstack.mailauth import dnscheck
from mailstack.mailauth.dnscheck import check_dns
from mailstack.mailauth.dnsrecords import record_set
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import install_certificate
from mailstack.tls import acme, certreload, certs, dane, rollover
from mailstack.tls.dane import DaneKeys
from mailstack.tls.tlscheck import dane_findings
from mailstack.verdict import FAIL, PASS, WARN
from tests.unit.test_certificates import NAMES, NOW, init_acme
from tests.unit.test_cli import init
from tests.unit.test_dnsrecords import ZoneLookup, config, policy_fetch, served

CURRENT, NEXT, OTHER = "aa" * 32, "bb" * 32, "cc" * 32
KEYS = DaneKeys(CURRENT, NEXT)
HOST = "mail.example.org"


def judged(published: list[str], *, validated: bool = True, signed: bool = True) -> Any:
    return dane.judge(published, validated=validated, zone_signed=signed, keys=KEYS, hostname=HOST)


def test_both_keys_published_and_validated_pass() -> None:
    assert judged([f"3 1 1 {CURRENT}", f"3 1 1 {NEXT}"]).verdict == PASS


def test_hex_split_or_upper_case_is_the_same_record() -> None:
    split = f"3 1 1 {CURRENT[:20].upper()} {CURRENT[20:]}"
    assert judged([split, f"3 1 1 {NEXT}"]).verdict == PASS


def test_no_record_of_the_served_key_fails_closed_for_senders() -> None:
    verdict = judged([f"3 1 1 {OTHER}", f"3 1 1 {NEXT}"])
    assert verdict.verdict == FAIL and "none matches the served key" in verdict.found
    assert verdict.fix == f"publish _25._tcp.{HOST}. IN TLSA 3 1 1 {CURRENT}"


def test_a_missing_next_key_record_is_a_warning_naming_it() -> None:
    verdict = judged([f"3 1 1 {CURRENT}"])
    assert verdict.verdict == WARN and NEXT in verdict.fix and "rollover" in verdict.fix
    manual = dane.judge(
        [f"3 1 1 {CURRENT}"],
        validated=True,
        zone_signed=True,
        keys=DaneKeys(CURRENT, None),
        hostname=HOST,
    )
    assert manual.verdict == PASS  # tls.mode manual: no next key of ours to publish


def test_records_dnssec_did_not_prove_are_ignored_by_senders() -> None:
    verdict = judged([f"3 1 1 {CURRENT}"], validated=False, signed=False)
    assert verdict.verdict == WARN and "not DNSSEC-validated" in verdict.found


def test_no_records_pass_in_an_unsigned_zone_and_warn_in_a_signed_one() -> None:
    assert judged([], validated=False, signed=False).verdict == PASS
    signed = judged([], validated=False, signed=True)
    assert signed.verdict == WARN and f"3 1 1 {CURRENT}" in signed.fix


def test_other_kinds_of_records_are_not_judged_as_a_mismatch() -> None:
    verdict = judged([f"2 1 1 {OTHER}"])
    assert verdict.verdict == WARN and "other kinds are not judged" in verdict.found


def test_dns_records_print_both_keys_as_zone_lines() -> None:
    text = str(record_set(config(), ["example.org"], (), KEYS))
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    rdataset = zone.get_rdataset(f"_25._tcp.{HOST}.", dns.rdatatype.TLSA)
    assert rdataset is not None
    assert sorted(rdata.to_text() for rdata in rdataset) == [
        f"3 1 1 {CURRENT}",
        f"3 1 1 {NEXT}",
    ]
    assert "DNSSEC-signed zone only" in text and "tls rollover" in text
    assert "TLSA" not in str(record_set(config(), ["example.org"], ()))  # no certificate yet


@pytest.mark.parametrize(
    ("tlsa", "signed", "verdict"),
    [
        ((CURRENT, NEXT), True, PASS),
        ((OTHER,), True, FAIL),
        ((CURRENT, NEXT), False, WARN),
        ((), False, PASS),
    ],
)
def test_check_dns_judges_the_tlsa_records_with_the_answers_proof(
    tlsa: tuple[str, ...], signed: bool, verdict: str
) -> None:
    settings = config()
    zone = served(settings, ()) + "".join(
        f"_25._tcp.{HOST}. 3600 IN TLSA 3 1 1 {digest}\n" for digest in tlsa
    )
    report = check_dns(
        settings,
        ["example.org"],
        (),
        ZoneLookup(zone, signed=signed),
        policy_fetch(settings),
        own_ca=False,
        dane=KEYS,
    )
    [row] = [row for row in report.rows if row.kind == "TLSA"]
    assert row.verdict == verdict, row
    assert row.name == f"_25._tcp.{HOST}"


# --- the key: kept across renewals, replaced only by the next one ------------------------------


def _served_spki(root: Path) -> str:
    cert = certs.load_certificate(root / "tls" / "cert.pem")
    assert cert is not None
    return dane.spki_sha256(cert.public_key())


def test_a_renewed_selfsigned_certificate_keeps_the_key(tmp_path: Path) -> None:
    certs.ensure_selfsigned(tmp_path, NAMES[0], tuple(NAMES[1:]), now=NOW)
    first = _served_spki(tmp_path)
    later = NOW + datetime.timedelta(days=340)  # within RENEW_BEFORE of the end
    report = certs.ensure_selfsigned(tmp_path, NAMES[0], tuple(NAMES[1:]), now=later)
    assert report.issued_server and _served_spki(tmp_path) == first
    wider = certs.ensure_selfsigned(tmp_path, NAMES[0], (*NAMES[1:], "new.example.test"), now=NOW)
    assert wider.issued_server and _served_spki(tmp_path) == first
    upcoming = ec.generate_private_key(ec.SECP256R1())
    certs.ensure_selfsigned(tmp_path, NAMES[0], (*NAMES[1:], "new.example.test"), key=upcoming)
    assert _served_spki(tmp_path) == dane.spki_sha256(upcoming.public_key())


def test_render_makes_a_next_key_once_as_a_secret(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    code, text = init(root)
    assert code == 0, text
    path = root / dane.NEXT_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = dane.load_keys(root)
    assert keys is not None and keys.next is not None and keys.next != keys.current
    before = path.read_bytes()
    install_certificate(root, Stack.load(root).config)
    assert path.read_bytes() == before


def test_an_acme_order_uses_the_served_key_and_retries_without_unvalidated_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certbot replaced by a CA that refuses one name: the second order leaves it out, and
    the certificate it issues is for the key the stack already served."""
    root = tmp_path / "stack"
    init_acme(root)
    install_certificate(root, Stack.load(root).config)
    placeholder_key = _served_spki(root)
    orders: list[list[str]] = []

    def order(stack: Stack, image: str, names: list[str], key: Any) -> tuple[bool, str]:
        orders.append(names)
        if "autoconfig.example.test" in names:
            return False, "  Domain: autoconfig.example.test\n  Detail: no A record\n"
        request = x509.load_pem_x509_csr(acme.certificate_request(key, names))
        issued = root / "acme" / acme.ISSUED
        issued.mkdir(parents=True, exist_ok=True)
        (issued / "fullchain.pem").write_bytes(_issue_for(request, names))
        return True, ""

    monkeypatch.setattr(acme, "_order", order)
    monkeypatch.setattr(builder, "ensure_images", lambda *a, **k: {"acme": "acme:test"})
    monkeypatch.setattr(certreload, "reload_daemons", lambda stack, running: [])
    stack = Stack.load(root)
    monkeypatch.setattr(stack.compose, "running_services", set)
    result = acme.renew(stack, now=NOW)
    assert result.renewed and "autoconfig.example.test" not in result.names
    assert len(orders) == 2 and "autoconfig.example.test" in orders[0]
    assert "autoconfig.example.test" not in orders[1]
    assert _served_spki(root) == placeholder_key


def _issue_for(request: x509.CertificateSigningRequest, names: list[str]) -> bytes:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(name)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the rollover ---------------------------------------------------------------------------------


def _rollover_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, published: list[str]) -> Stack:
    """A stack whose DNS serves these TLSA records, nothing of it running."""
    root = tmp_path / "stack"
    code, text = init(root)
    assert code == 0, text
    monkeypatch.setattr(rollover, "_published", lambda stack, resolver: published)
    stack = Stack.load(root)
    monkeypatch.setattr(stack.compose, "running_services", set)
    return stack


def test_the_rollover_is_refused_while_dns_leaves_the_next_key_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _rollover_stack(tmp_path, monkeypatch, [dane.tlsa_data(OTHER)])
    before = (stack.dir.root / "tls" / "key.pem").read_bytes()
    with pytest.raises(UsageError) as refused:
        rollover.rollover(stack)
    assert "the next key's record is not published" in refused.value.message
    assert (stack.dir.root / "tls" / "key.pem").read_bytes() == before


def test_the_rollover_serves_the_published_next_key_and_makes_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[str] = []
    stack = _rollover_stack(tmp_path, monkeypatch, published)
    keys = dane.load_keys(stack.dir.root)
    assert keys is not None and keys.next is not None
    published += [dane.tlsa_data(keys.current), dane.tlsa_data(keys.next)]
    result = rollover.rollover(stack)
    after = dane.load_keys(stack.dir.root)
    assert after is not None and after.current == keys.next
    assert after.next not in (keys.current, keys.next)
    assert result.serving == dane.tlsa_data(keys.next)
    assert result.retired == dane.tlsa_data(keys.current)
    assert f"IN TLSA {result.next}" in str(result) and "remove" in str(result)


def test_the_rollover_of_an_operators_key_is_the_operators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _rollover_stack(tmp_path, monkeypatch, [])
    manual = stack.config.tls.model_copy(update={"mode": "manual"})
    stack = dataclasses.replace(stack, config=stack.config.model_copy(update={"tls": manual}))
    with pytest.raises(UsageError, match=r"tls\.mode: 'manual'"):
        rollover.rollover(stack)


def test_check_tls_warns_when_the_served_key_has_no_record_in_a_signed_zone() -> None:
    served_key = dane.tlsa_data(CURRENT)
    [warning] = dane_findings(served_key, HOST, lambda: ([], False, True), NEXT)
    assert warning.verdict == WARN and f"_25._tcp.{HOST}" in warning.what
    assert dane_findings(served_key, HOST, lambda: ([], False, False), NEXT) == []
    [failure] = dane_findings(served_key, HOST, lambda: ([f"3 1 1 {OTHER}"], True, True), NEXT)
    assert failure.verdict == FAIL

    def unanswered() -> tuple[list[str], bool, bool]:
        raise dnscheck.DnsLookupFailed("the resolver 192.0.2.53 does not answer")

    [unchecked] = dane_findings(served_key, HOST, unanswered, NEXT)
    assert unchecked.verdict == WARN and "not checked" in unchecked.what
