"""Where the stack's certificate comes from: ACME renewal decisions and certbot's command,
the operator's own files (tls.mode manual), the trusted CA file, and mode switches."""

from __future__ import annotations

import datetime
import json
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack.errors import UsageError
from mailstack.runtime import schedule
from mailstack.stack.config import validate_config
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import install_certificate
from mailstack.tls import acme, certs
from tests.conftest import REFERENCE
from tests.unit.test_cli import init, invoke

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
NAMES = [
    "mail.example.test",
    "mta-sts.example.test",
    "autoconfig.example.test",
    "autodiscover.example.test",
]


def certificate(
    names: list[str], days: int = 90, issuer: str = "Test CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def acme_config(**tls_values: Any) -> Any:
    return validate_config({**REFERENCE, "tls": {"mode": "acme", **tls_values}})


# --- when to renew ------------------------------------------------------------------------------


def test_every_name_the_front_serves_is_ordered_hostname_first() -> None:
    assert acme.wanted_names(acme_config(), []) == NAMES
    # Every other mail domain (a DKIM key each) adds its web names; the first is not repeated.
    assert acme.wanted_names(acme_config(), ["example.net", "example.test"]) == [
        *NAMES,
        "mta-sts.example.net",
        "autoconfig.example.net",
        "autodiscover.example.net",
    ]


def test_names_the_ca_could_not_validate_wait_unless_the_certificate_is_due() -> None:
    cert, _ = certificate(NAMES[:2], days=80)
    issued = acme.AcmeState(
        True,
        issued=(NOW - datetime.timedelta(hours=3)).isoformat(),
        unvalidated=tuple(NAMES[2:]),
    )
    settings = acme_config().tls
    assert acme.waiting_for_dns(cert, issued, NAMES, NOW, settings)
    # A name never tried (a domain added since) is ordered at once.
    assert not acme.waiting_for_dns(cert, issued, [*NAMES, "mta-sts.example.net"], NOW, settings)
    # Two days on, they are tried again.
    later = NOW + acme.RETRY_UNVALIDATED
    assert not acme.waiting_for_dns(cert, issued, NAMES, later, settings)
    # A certificate that is due anyway is renewed whatever names wait.
    expiring, _ = certificate(NAMES[:2], days=10)
    assert not acme.waiting_for_dns(expiring, issued, NAMES, NOW, settings)
    assert not acme.waiting_for_dns(cert, None, NAMES, NOW, settings)


@pytest.mark.parametrize(
    ("names", "days", "renew_days", "expected"),
    [
        (NAMES, 60, 30, None),
        (NAMES, 29, 30, "it expires in 29 days (renewal 30 days before)"),
        (NAMES, 60, 90, "it expires in 60 days (renewal 90 days before)"),
        (NAMES[:2], 60, 30, "does not cover autoconfig.example.test, autodiscover.example.test"),
        (NAMES, -3, 30, "it expires in 0 days"),
    ],
)
def test_renewal_is_due_when_expiring_or_a_name_is_missing(
    names: list[str], days: int, renew_days: int, expected: str | None
) -> None:
    cert, _ = certificate(names, days)
    reason = acme.renewal_reason(cert, None, NAMES, NOW, renew_days)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def test_the_stacks_own_placeholder_and_no_certificate_are_due() -> None:
    placeholder, _ = certificate(NAMES, 365, issuer="mailstack CA for mail.example.test")
    stack_ca, _ = certificate(["ca"], 3650, issuer="mailstack CA for mail.example.test")
    stack_ca_subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "mailstack CA for mail.example.test")]
    )
    assert stack_ca.issuer == stack_ca_subject
    reason = acme.renewal_reason(placeholder, _as_ca(stack_ca_subject), NAMES, NOW, 30)
    assert reason == "the stack serves its own self-signed placeholder"
    assert acme.renewal_reason(None, None, NAMES, NOW, 30) == "there is no certificate yet"


def _as_ca(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certbot_orders_the_request_with_webroot_and_the_configured_server() -> None:
    config = acme_config(acme_server="https://acme.example.net/dir", acme_email="ops@example.test")
    args = acme.certbot_args(config)
    assert args[0] == "certonly" and "--non-interactive" in args and "--agree-tos" in args
    assert args[args.index("--server") + 1] == "https://acme.example.net/dir"
    assert args[args.index("--webroot-path") + 1] == "/acme/webroot"
    assert args[args.index("--email") + 1] == "ops@example.test"
    # The names and the key come in mailstack's request: certbot holds no server key.
    assert args[args.index("--csr") + 1] == "/acme/request.csr"
    assert args[args.index("--fullchain-path") + 1] == "/acme/issued/fullchain.pem"
    assert "--domain" not in args and "--key-type" not in args
    without_email = acme.certbot_args(acme_config())
    assert "--register-unsafely-without-email" in without_email
    assert acme_config().tls.acme_server.startswith("https://acme-v02.api.letsencrypt.org/")


def test_the_request_names_every_name_hostname_first_with_the_given_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.load_pem_x509_csr(acme.certificate_request(key, NAMES))
    assert request.is_signature_valid
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAMES[0]
    alt = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == NAMES
    assert certs.same_key(request.public_key(), key.public_key())


def test_the_error_line_is_the_cas_own_words() -> None:
    output = "\n".join(
        [
            "Saving debug log to /tmp/certbot/logs/letsencrypt.log",
            "Certbot failed to authenticate some domains (authenticator: webroot).",
            "  Domain: autoconfig.example.org",
            "  Type:   dns",
            "  Detail: no valid A records found for autoconfig.example.org",
            "Some challenges have failed.",
        ]
    )
    assert (
        acme.certbot_error(output) == "Detail: no valid A records found for autoconfig.example.org"
    )
    assert acme.certbot_error("") == "certbot printed nothing"
    assert acme.validation_failures(output) == {
        "autoconfig.example.org": "no valid A records found for autoconfig.example.org"
    }


@pytest.mark.parametrize(
    ("tls_values", "expected"),
    [
        ({"acme_server": "http://acme.example.net/dir"}, "is not an https:// URL"),
        ({"acme_server": "https://acme.example.net/dir\nx"}, "control character"),
        ({"renew_days": 0}, "is too small"),
        ({"ca_file": "relative/ca.pem"}, "absolute"),
    ],
)
def test_bad_acme_settings_are_one_line_errors(tls_values: dict[str, Any], expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        acme_config(**tls_values)
    assert caught.value.message.startswith("mailstack.yaml: tls")
    assert expected in caught.value.message


def test_the_renewal_timer_runs_tls_renew_twice_a_day(tmp_path: Path) -> None:
    timer = schedule.renewal_timer(tmp_path / "stack", acme_config())
    result = schedule.switch("on", timer, tmp_path)
    service = (tmp_path / "mailstack-tls-reference.service").read_text()
    timer_text = (tmp_path / "mailstack-tls-reference.timer").read_text()
    assert "OnCalendar=*-*-* 04,16:00:00" in timer_text and "Persistent=true" in timer_text
    command = next(
        shlex.split(line.removeprefix("ExecStart="))
        for line in service.splitlines()
        if line.startswith("ExecStart=")
    )
    assert command[3:] == ["tls", "renew", "--dir", str(tmp_path / "stack")]
    assert "Nice=" not in service and not result.activated
    assert schedule.installed(timer, tmp_path)
    schedule.switch("off", timer, tmp_path)
    assert not schedule.installed(timer, tmp_path)
    with pytest.raises(UsageError, match="is not on or off"):
        schedule.switch("maybe", timer, tmp_path)


# --- installing a certificate -------------------------------------------------------------------


def test_a_chain_is_installed_only_with_its_own_key(tmp_path: Path) -> None:
    cert, key = certificate(NAMES)
    _, other_key = certificate(NAMES)
    with pytest.raises(ValueError, match="does not belong"):
        certs.install_chain(tmp_path, pem(cert), key_pem(other_key))
    assert not (tmp_path / "tls" / "cert.pem").exists()
    certs.install_chain(tmp_path, pem(cert), key_pem(key))
    assert (tmp_path / "tls" / "cert.pem").read_bytes() == pem(cert)
    assert stat.S_IMODE((tmp_path / "tls" / "key.pem").stat().st_mode) == 0o600


def _manual_files(tmp_path: Path, names: list[str], days: int = 90) -> tuple[Path, Path]:
    cert, key = certificate(names, days)
    cert_file, key_file = tmp_path / "operator-cert.pem", tmp_path / "operator-key.pem"
    cert_file.write_bytes(pem(cert))
    key_file.write_bytes(key_pem(key))
    return cert_file, key_file


@pytest.mark.parametrize(
    ("names", "days", "expected"),
    [
        (["other.example.test"], 90, "does not cover the hostname mail.example.test"),
        (NAMES, -1, "expired on"),
    ],
)
def test_manual_files_are_checked_before_use(
    tmp_path: Path, names: list[str], days: int, expected: str
) -> None:
    cert_file, key_file = _manual_files(tmp_path, names, days)
    with pytest.raises(UsageError, match=expected) as caught:
        certs.install_manual(tmp_path / "stack", str(cert_file), str(key_file), NAMES[0])
    assert caught.value.message.startswith(f"tls.cert_file: {cert_file}")


def test_manual_files_that_are_missing_or_not_pem_name_the_key(tmp_path: Path) -> None:
    cert_file, _ = _manual_files(tmp_path, NAMES)
    with pytest.raises(UsageError, match=r"^tls.key_file: /nonexistent/key.pem cannot be read"):
        certs.install_manual(tmp_path, str(cert_file), "/nonexistent/key.pem", NAMES[0])
    with pytest.raises(UsageError, match="is not a PEM file with a private key"):
        certs.install_manual(tmp_path, str(cert_file), str(cert_file), NAMES[0])


def test_manual_mode_serves_the_operators_files_and_back_to_selfsigned(
    stack_root: Path, tmp_path: Path
) -> None:
    code, text = init(stack_root)
    assert code == 0, text
    cert_file, key_file = _manual_files(tmp_path, NAMES)
    ca_file = tmp_path / "private-ca.pem"
    ca_file.write_bytes(pem(certificate(["Private CA"])[0]))
    config_path = stack_root / "mailstack.yaml"
    document = yaml.safe_load(config_path.read_text())
    document["tls"] = {
        "mode": "manual",
        "cert_file": str(cert_file),
        "key_file": str(key_file),
        "ca_file": str(ca_file),
    }
    config_path.write_text(yaml.safe_dump(document))
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 0, text
    assert (stack_root / "tls" / "cert.pem").read_bytes() == cert_file.read_bytes()
    assert (stack_root / "tls" / "trusted.pem").read_bytes() == ca_file.read_bytes()
    compose = (stack_root / "compose.yaml").read_text()
    assert "./tls/trusted.pem:/etc/mailstack/tls/ca.pem:ro" in compose
    assert "acme/webroot" not in compose

    # A broken key file: one line, exit 2, the served files untouched.
    key_file.write_text("not a key\n")
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 2 and "tls.key_file" in text and "Traceback" not in text
    assert (stack_root / "tls" / "cert.pem").read_bytes() == cert_file.read_bytes()

    document["tls"] = {"mode": "selfsigned"}
    config_path.write_text(yaml.safe_dump(document))
    code, text = invoke("render", "--dir", str(stack_root))
    assert code == 0, text
    served = x509.load_pem_x509_certificate((stack_root / "tls" / "cert.pem").read_bytes())
    own_ca = x509.load_pem_x509_certificate((stack_root / "tls" / "ca.pem").read_bytes())
    assert served.issuer == own_ca.subject
    assert not (stack_root / "tls" / "trusted.pem").exists()


def test_acme_mode_starts_on_the_stacks_own_certificate_and_keeps_an_acme_one(
    stack_root: Path,
) -> None:
    code, text = init(stack_root)
    assert code == 0, text
    config = acme_config()
    install_certificate(stack_root, config)
    placeholder = (stack_root / "tls" / "cert.pem").read_bytes()
    assert (stack_root / "acme" / "webroot").is_dir()
    assert stat.S_IMODE((stack_root / "acme" / "letsencrypt").stat().st_mode) == 0o700
    issued, key = certificate(NAMES)
    certs.install_chain(stack_root, pem(issued), key_pem(key))
    install_certificate(stack_root, config)  # a re-render keeps the ACME certificate
    assert (stack_root / "tls" / "cert.pem").read_bytes() == pem(issued) != placeholder


def init_acme(stack_root: Path) -> None:
    """A stack made by `init`, then switched to tls.mode acme in its mailstack.yaml."""
    code, text = init(stack_root)
    assert code == 0, text
    config_path = stack_root / "mailstack.yaml"
    document = yaml.safe_load(config_path.read_text())
    document["tls"] = {"mode": "acme"}
    config_path.write_text(yaml.safe_dump(document))


def test_renew_leaves_a_good_certificate_alone_and_says_which_names_wait(stack_root: Path) -> None:
    init_acme(stack_root)
    # Issued yesterday without the autoconfig names (their DNS was not there yet).
    issued, key = certificate(NAMES[:2], days=80)
    certs.install_chain(stack_root, pem(issued), key_pem(key))
    (stack_root / ".mailstack" / "acme.json").write_text(
        json.dumps(
            {
                "ok": True,
                "issued": (NOW - datetime.timedelta(days=1)).isoformat(),
                "unvalidated": NAMES[2:],
            }
        )
    )
    result = acme.renew(Stack.load(stack_root), now=NOW)  # no container: nothing is due
    assert not result.renewed and result.names == tuple(NAMES[:2])
    assert result.waiting == tuple(NAMES[2:]) and "not validated yet" in str(result)
    state = acme.read_state(stack_root)
    assert state is not None and state.ok is True and state.unvalidated == tuple(NAMES[2:])
    assert state.not_after == issued.not_valid_after_utc.isoformat()


def test_renew_in_another_mode_is_a_usage_error(stack_root: Path) -> None:
    code, text = init(stack_root)
    assert code == 0, text
    code, text = invoke("tls", "renew", "--dir", str(stack_root))
    assert code == 2 and "tls.mode: 'selfsigned' gets no ACME certificates" in text


# --- the stack's own CA (tls.mode selfsigned) ---------------------------------------------------


def _openssl_verify(ca: Path, leaf_pem: bytes, tmp_path: Path, name: str) -> str:
    """OpenSSL's own verdict (it enforces name constraints) on a leaf for one host name:
    "OK", or its error."""
    leaf = tmp_path / f"leaf-{name}.pem"
    leaf.write_bytes(leaf_pem)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), "-verify_hostname", name, str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "OK" if result.returncode == 0 else result.stdout + result.stderr


def _minted(root: Path, names: list[str]) -> bytes:
    """A certificate an attacker holding the CA's key would mint for these names."""
    ca_key = serialization.load_pem_private_key((root / "secrets" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((root / "tls" / "ca.pem").read_bytes())
    return pem(
        certs._issue_server(ec.generate_private_key(ec.SECP256R1()), names, ca_key, ca_cert, NOW)
    )


def test_the_stacks_ca_can_issue_only_for_the_names_it_serves(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o700)
    report = certs.ensure_selfsigned(tmp_path, NAMES[0], tuple(NAMES[1:]), now=NOW)
    assert report.created_ca and report.issued_server
    ca_path = tmp_path / "tls" / "ca.pem"
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    assert certs.permitted_names(ca) == sorted(NAMES)
    assert ca.not_valid_after_utc - NOW < datetime.timedelta(days=731)
    served = (tmp_path / "tls" / "cert.pem").read_bytes()
    assert _openssl_verify(ca_path, served, tmp_path, NAMES[0]) == "OK"
    # With the CA's key stolen: a bank, another host of the operator's domain, an IP address.
    for outside in ["bank.example.com", "www.example.test", "example.test"]:
        verdict = _openssl_verify(ca_path, _minted(tmp_path, [outside]), tmp_path, outside)
        assert "permitted subtree violation" in verdict
    ip_leaf = _minted(tmp_path, [NAMES[0], "192.0.2.1"])
    assert "excluded subtree violation" in _openssl_verify(ca_path, ip_leaf, tmp_path, NAMES[0])


def test_a_new_domain_or_an_old_unconstrained_ca_reissues_the_ca_with_the_same_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "secrets").mkdir(mode=0o700)
    certs.ensure_selfsigned(tmp_path, NAMES[0], tuple(NAMES[1:]), now=NOW)
    key_before = (tmp_path / "secrets" / "ca.key").read_bytes()
    ca_before = (tmp_path / "tls" / "ca.pem").read_bytes()
    # Nothing changed: nothing re-issued.
    again = certs.ensure_selfsigned(tmp_path, NAMES[0], tuple(NAMES[1:]), now=NOW)
    assert not again.created_ca and not again.issued_server
    # A domain added: the CA's constraints grow, its key stays; the old leaf still verifies.
    old_leaf = (tmp_path / "tls" / "cert.pem").read_bytes()
    more = (*NAMES[1:], "mta-sts.example.net")
    report = certs.ensure_selfsigned(tmp_path, NAMES[0], more, now=NOW)
    assert report.created_ca and report.issued_server
    assert (tmp_path / "secrets" / "ca.key").read_bytes() == key_before
    ca_path = tmp_path / "tls" / "ca.pem"
    assert ca_path.read_bytes() != ca_before
    assert "mta-sts.example.net" in (
        certs.permitted_names(x509.load_pem_x509_certificate(ca_path.read_bytes())) or []
    )
    assert _openssl_verify(ca_path, old_leaf, tmp_path, NAMES[0]) == "OK"
    # A CA from before name constraints (ten years, unconstrained) is replaced on render.
    ca_key = serialization.load_pem_private_key(key_before, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    unconstrained = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    ca_path.write_bytes(pem(unconstrained))
    assert certs.ensure_selfsigned(tmp_path, NAMES[0], more, now=NOW).created_ca
    assert certs.permitted_names(x509.load_pem_x509_certificate(ca_path.read_bytes())) is not None
    # Renewed 90 days before its end, with the same key.
    late = NOW + certs.CA_VALIDITY - datetime.timedelta(days=89)
    assert certs.ensure_selfsigned(tmp_path, NAMES[0], more, now=late).created_ca
    renewed = x509.load_pem_x509_certificate(ca_path.read_bytes())
    assert renewed.not_valid_after_utc > late + datetime.timedelta(days=600)
    served = x509.load_pem_x509_certificate((tmp_path / "tls" / "cert.pem").read_bytes())
    assert served.not_valid_after_utc <= renewed.not_valid_after_utc
