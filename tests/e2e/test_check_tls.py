"""`mailstack check tls` against the running stack (tls.mode selfsigned): every endpoint
answers with TLS 1.2 and 1.3 only and the stack's own certificate, so the command exits 3."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import DOMAIN, HOSTNAME, PORTS, RunningStack

pytestmark = pytest.mark.e2e

# In `check tls`'s order; POP3's two doors because features.pop3 and pop3_starttls are on in
# the session stack.
ENDPOINTS = (
    "smtp",
    "submissions",
    "submission",
    "imap",
    "imaps",
    "managesieve",
    "pop3",
    "pop3s",
    "https",
)
WEB_NAMES = tuple(f"{host}.{DOMAIN}" for host in ("mta-sts", "autoconfig", "autodiscover"))


def served_leaf_sha256(stack: RunningStack) -> str:
    leaf = x509.load_pem_x509_certificates((stack.root / "tls" / "cert.pem").read_bytes())[0]
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_check_tls_json_reports_every_endpoint_with_the_stack_certificate(
    stack: RunningStack,
) -> None:
    result = stack.cli("check", "tls", DOMAIN, "--json", check=False)
    assert result.returncode == 3, result.stdout + result.stderr  # good, but the stack's own CA
    report: dict[str, Any] = json.loads(result.stdout)
    assert (report["ok"], report["exit_code"], report["findings"], report["acme"]) == (
        True,
        3,
        [],
        None,
    )
    endpoints = {endpoint["name"]: endpoint for endpoint in report["endpoints"]}
    assert list(endpoints) == list(ENDPOINTS)
    leaf_sha256 = served_leaf_sha256(stack)
    for name, endpoint in endpoints.items():
        assert endpoint["port"] == PORTS[name]
        assert endpoint["verdict"] == "pass" and endpoint["findings"] == [], endpoint["findings"]
        assert endpoint["protocols"] == {
            "TLS1.0": False,
            "TLS1.1": False,
            "TLS1.2": True,
            "TLS1.3": True,
        }, name
        leaf = endpoint["leaf"]
        assert (leaf["key"], leaf["signature"]) == ("ECDSA P-256", "ECDSA-SHA256")
        assert 363 <= leaf["days_left"] <= 365  # the stack issues for 365 days
        assert (leaf["ocsp"], leaf["crl"], leaf["ca_issuers"]) == ([], [], [])
        # Every mail domain's web names (other tests add domains), the first one's included.
        assert set(leaf["names"]) >= {HOSTNAME, *WEB_NAMES}
        chain = endpoint["chain"]
        assert chain["anchor"] == "stack-ca"
        assert [c["subject"] for c in chain["certificates"]] == [
            f"CN={HOSTNAME}",
            f"CN=mailstack CA for {HOSTNAME}",
        ]
        assert chain["certificates"][0]["sha256"] == leaf_sha256
        expected_names = (HOSTNAME, *WEB_NAMES) if name == "https" else (HOSTNAME,)
        assert [(n["name"], n["covered"], n["certificate"]) for n in endpoint["names"]] == [
            (n, True, leaf_sha256) for n in expected_names
        ]


def test_check_tls_text_lists_each_endpoint_and_exits_by_the_domains_covered(
    stack: RunningStack,
) -> None:
    domains = [d["name"] for d in json.loads(stack.cli("domain", "list", "--json").stdout)]
    result = stack.cli("check", "tls", check=False)
    text = result.stdout
    for name in ENDPOINTS:
        assert f"{name} 127.0.0.1:{PORTS[name]}" in text
    assert text.count("TLS1.2, TLS1.3 (refused: TLS1.0, TLS1.1)") == len(ENDPOINTS)
    # The stack's certificate names the web hosts of every mail domain, those added later
    # (other tests add some) too: nothing is missing.
    assert len(domains) >= 1 and "to the certificate's names" not in text
    assert result.returncode == 3, text + result.stderr
    assert f"{len(ENDPOINTS)} endpoints good; the chain ends at the stack's own CA" in text


def test_a_failed_acme_renewal_fails_check_tls_with_its_error(stack: RunningStack) -> None:
    # The state counts in tls.mode acme only (the mode is read from mailstack.yaml; nothing is
    # re-rendered, the stack still serves its own certificate).
    config_path = stack.root / "mailstack.yaml"
    original = config_path.read_text()
    config = yaml.safe_load(original)
    config["tls"] = {"mode": "acme"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    state = stack.root / ".mailstack" / "acme.json"
    state.write_text(
        json.dumps(
            {
                "ok": False,
                "checked": "2026-12-01T03:00:00+00:00",
                "error": "challenge failed: 203.0.113.9: Connection refused",
                "not_after": None,
            }
        )
    )
    try:
        result = stack.cli("check", "tls", DOMAIN, check=False)
    finally:
        state.unlink()
        config_path.write_text(original)
    assert result.returncode == 1
    assert (
        "FAIL: ACME: the certificate renewal failed (checked 2026-12-01T03:00:00+00:00): "
        "challenge failed: 203.0.113.9: Connection refused" in result.stdout
    )
