"""`check tls`: the served chain judged (certificates made here), and the openssl adapter
against a real `openssl s_server` on loopback."""

from __future__ import annotations

import datetime
import functools
import json
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from typer.testing import CliRunner

from mailstack import errors
from mailstack.cli.main import app
from mailstack.stack.config import validate_config
from mailstack.tls import chains, handshakes, judgement, tlscheck
from mailstack.tls.chains import ANCHOR_BROKEN, ANCHOR_INCOMPLETE, ANCHOR_OWN_CA, ANCHOR_PUBLIC
from mailstack.tls.handshakes import Endpoint, Handshake, Probe
from mailstack.verdict import FAIL, PASS, WARN

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
HOST = "mail.example.test"
HTTPS_NAMES = (HOST, "mta-sts.example.test", "autoconfig.example.test", "autodiscover.example.test")

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: Key

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def issue(  # a certificate has this many knobs
    subject: str,
    issuer: Issued | None = None,
    *,
    names: Sequence[str] = (),
    ca: bool = False,
    key: Key | None = None,
    days: tuple[int, int] = (-1, 365),
    digest: hashes.HashAlgorithm | None = None,
    urls: bool = False,
) -> Issued:
    """A certificate: self-signed when issuer is None."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    if urls:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.ca.test"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://ca.test/intermediate.der"),
                    ),
                ]
            ),
            critical=False,
        ).add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://crl.ca.test/1.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, digest or hashes.SHA256()), key)


@pytest.fixture(scope="module")
def own_ca() -> Issued:
    return issue("mailstack CA for mail.example.test", ca=True, days=(-1, 3650))


@pytest.fixture(scope="module")
def stack_leaf(own_ca: Issued) -> Issued:
    return issue(HOST, own_ca, names=HTTPS_NAMES)


def endpoint(name: str = "https", names: tuple[str, ...] = HTTPS_NAMES) -> Endpoint:
    return Endpoint(name, "127.0.0.1", 443, None, names)


def probe(
    chain: str, names: Sequence[str] = HTTPS_NAMES, offered: Sequence[str] = ("TLS1.2", "TLS1.3")
) -> Probe:
    served = Handshake("TLS1.3", chain, False, "")
    refused = Handshake(None, "", False, "handshake failure")
    return Probe(
        dict.fromkeys(names, served),
        {version: served if version in offered else refused for version in handshakes.PROTOCOLS},
    )


def judge(
    chain: str,
    own: Issued | None = None,
    public: Sequence[Issued] = (),
    *,
    target: Endpoint | None = None,
    **probe_args: Sequence[str],
) -> judgement.EndpointReport:
    return judgement.evaluate_endpoint(
        target or endpoint(),
        probe(chain, **probe_args),
        NOW,
        [own.certificate] if own else [],
        [root.certificate for root in public],
    )


def report_of(*endpoints: judgement.EndpointReport) -> tlscheck.TlsCheckReport:
    return tlscheck.TlsCheckReport(tuple(endpoints), None, ())


def fails(report: judgement.EndpointReport) -> list[str]:
    return [finding.what for finding in report.findings if finding.verdict == FAIL]


# --- the chain and its root ----------------------------------------------------------------------


def test_the_stack_certificate_ends_at_its_own_ca_and_exits_3(
    own_ca: Issued, stack_leaf: Issued
) -> None:
    result = judge(stack_leaf.pem + own_ca.pem, own_ca)
    assert result.verdict == PASS and result.findings == ()
    assert result.chain is not None and result.chain.anchor == ANCHOR_OWN_CA
    assert [c.subject for c in result.chain.certificates] == [
        f"CN={HOST}",
        "CN=mailstack CA for mail.example.test",
    ]
    assert result.leaf is not None
    assert (result.leaf.key, result.leaf.signature) == ("ECDSA P-256", "ECDSA-SHA256")
    assert result.leaf.days_left == 365
    assert (result.leaf.ocsp, result.leaf.crl) == ((), ())
    assert all(check.covered for check in result.names)
    assert [check.name for check in result.names] == list(HTTPS_NAMES)
    assert report_of(result).exit_code == errors.EXIT_OWN_CA


def test_a_public_chain_without_its_root_served_completes_from_the_trust_store() -> None:
    root = issue("Public Root", ca=True, days=(-100, 3650))
    intermediate = issue("Public Intermediate", root, ca=True, days=(-50, 1000))
    leaf = issue(HOST, intermediate, names=HTTPS_NAMES, urls=True)
    result = judge(leaf.pem + intermediate.pem, public=[root])
    assert result.findings == ()
    assert result.chain is not None and result.chain.anchor == ANCHOR_PUBLIC
    assert [(c.subject, c.served) for c in result.chain.certificates] == [
        (f"CN={HOST}", True),
        ("CN=Public Intermediate", True),
        ("CN=Public Root", False),
    ]
    assert result.leaf is not None
    assert result.leaf.ocsp == ("http://ocsp.ca.test",)
    assert result.leaf.ca_issuers == ("http://ca.test/intermediate.der",)
    assert result.leaf.crl == ("http://crl.ca.test/1.crl",)
    assert report_of(result).exit_code == 0


def test_a_missing_intermediate_is_an_incomplete_chain() -> None:
    root = issue("Public Root", ca=True, days=(-100, 3650))
    intermediate = issue("Public Intermediate", root, ca=True)
    leaf = issue(HOST, intermediate, names=HTTPS_NAMES)
    result = judge(leaf.pem, public=[root])
    assert result.chain is not None and result.chain.anchor == ANCHOR_INCOMPLETE
    assert any("CN=Public Intermediate" in what for what in fails(result))
    assert "fullchain" in result.findings[0].fix
    assert report_of(result).exit_code == 1


def test_a_self_signed_root_nobody_trusts_fails(own_ca: Issued) -> None:
    stranger = issue("Some Other CA", ca=True)
    leaf = issue(HOST, stranger, names=HTTPS_NAMES)
    result = judge(leaf.pem + stranger.pem, own_ca)
    assert result.chain is not None and result.chain.anchor == chains.ANCHOR_UNTRUSTED
    assert fails(result) == [
        "https:443: the chain ends at an untrusted root: CN=Some Other CA is a root nobody "
        "here trusts"
    ]


def test_an_issuer_of_the_right_name_but_another_key_is_a_broken_chain(own_ca: Issued) -> None:
    impostor = issue("mailstack CA for mail.example.test", ca=True)  # same name, new key
    leaf = issue(HOST, impostor, names=HTTPS_NAMES)
    result = judge(leaf.pem, own_ca)
    assert result.chain is not None and result.chain.anchor == ANCHOR_BROKEN
    assert "does not verify" in fails(result)[0]


def test_a_leaf_certificate_cannot_issue(own_ca: Issued) -> None:
    not_a_ca = issue("Not A CA", own_ca, names=("other.test",))
    leaf = issue(HOST, not_a_ca, names=HTTPS_NAMES)
    result = judge(leaf.pem + not_a_ca.pem + own_ca.pem, own_ca)
    assert result.chain is not None and result.chain.anchor == ANCHOR_BROKEN
    assert "CN=Not A CA is not a CA certificate" in fails(result)[0]


# --- dates, names, keys ----------------------------------------------------------------------------


def test_an_expired_certificate_fails_with_the_renewal_as_fix(own_ca: Issued) -> None:
    leaf = issue(HOST, own_ca, names=HTTPS_NAMES, days=(-400, -2))
    result = judge(leaf.pem + own_ca.pem, own_ca)
    assert result.leaf is not None and result.leaf.days_left == -2
    assert fails(result) == [f"https:443: CN={HOST} expired on 2026-05-30T12:00:00+00:00"]
    assert "mailstack render" in result.findings[0].fix
    assert report_of(result).exit_code == 1


def test_a_certificate_expiring_within_21_days_warns_without_failing(own_ca: Issued) -> None:
    leaf = issue(HOST, own_ca, names=HTTPS_NAMES, days=(-80, 20))
    result = judge(leaf.pem + own_ca.pem, own_ca)
    assert result.verdict == WARN and fails(result) == []
    assert [f.what for f in result.findings] == ["https:443: the certificate expires in 20 days"]
    assert report_of(result).exit_code == errors.EXIT_OWN_CA


def test_a_name_the_certificate_lacks_is_reported_by_name(own_ca: Issued) -> None:
    leaf = issue(HOST, own_ca, names=(HOST, "mta-sts.example.test"))
    result = judge(leaf.pem + own_ca.pem, own_ca)
    missing = [check.name for check in result.names if not check.covered]
    assert missing == ["autoconfig.example.test", "autodiscover.example.test"]
    assert len(fails(result)) == 2
    assert (
        result.findings[0].fix
        == "add autoconfig.example.test to the certificate's names (subjectAltName)"
    )


def test_a_wildcard_covers_one_label_only(own_ca: Issued) -> None:
    leaf = issue("*.example.test", own_ca, names=("*.example.test",))
    result = judge(leaf.pem + own_ca.pem, own_ca, target=endpoint("imaps", (HOST,)), names=(HOST,))
    assert result.findings == ()
    assert chains.name_matches("a.example.test", "*.example.test")
    assert not chains.name_matches("a.b.example.test", "*.example.test")
    assert not chains.name_matches("example.test", "*.example.test")


def test_rsa_1024_is_a_weak_key_and_rsa_2048_is_not(own_ca: Issued) -> None:
    weak = issue(HOST, own_ca, names=HTTPS_NAMES, key=rsa.generate_private_key(65537, 1024))  # noqa: S505  # the weak key under test
    result = judge(weak.pem + own_ca.pem, own_ca)
    assert fails(result) == [f"https:443: CN={HOST} has a weak key (RSA 1024)"]
    strong = issue(HOST, own_ca, names=HTTPS_NAMES, key=rsa.generate_private_key(65537, 2048))
    assert judge(strong.pem + own_ca.pem, own_ca).findings == ()
    assert chains.describe_key(strong.certificate) == ("RSA 2048", True)


def test_a_sha1_signature_is_weak_and_rsa_sha256_is_not(tmp_path: Path) -> None:
    root = issue("RSA Root", ca=True, key=rsa.generate_private_key(65537, 2048), days=(-1000, 3650))
    assert chains.describe_signature(root.certificate) == ("RSA-SHA256", True)
    # cryptography no longer signs with SHA-1; OpenSSL still does.
    (tmp_path / "ca.pem").write_text(root.pem)
    (tmp_path / "ca.key").write_bytes(
        root.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ext").write_text(f"subjectAltName=DNS:{HOST}\n")
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=tmp_path)
    run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-subj",
            f"/CN={HOST}",
            "-out",
            "leaf.csr",
        ]
    )
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-sha1",
            "-days",
            "30",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ]
    )
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    assert chains.describe_signature(leaf) == ("RSA-SHA1", False)
    result = judgement.evaluate_endpoint(
        endpoint("imaps", (HOST,)),
        probe((tmp_path / "leaf.pem").read_text() + root.pem, names=(HOST,)),
        datetime.datetime.now(datetime.UTC),
        [root.certificate],
        [],
    )
    assert fails(result) == [f"imaps:443: CN={HOST} has a weak signature (RSA-SHA1)"]


def test_another_certificate_for_one_sni_name_is_judged_too(
    own_ca: Issued, stack_leaf: Issued
) -> None:
    expired = issue("mta-sts.example.test", own_ca, names=("mta-sts.example.test",), days=(-9, -1))
    probed = probe(stack_leaf.pem + own_ca.pem)
    probed.by_name["mta-sts.example.test"] = Handshake("TLS1.3", expired.pem, False, "")
    result = judgement.evaluate_endpoint(endpoint(), probed, NOW, [own_ca.certificate], [])
    assert fails(result) == [
        "https:443 (mta-sts.example.test): CN=mta-sts.example.test expired on "
        "2026-05-31T12:00:00+00:00"
    ]


# --- protocols and handshakes ---------------------------------------------------------------------


def test_tls_1_0_and_1_1_offered_are_failures(own_ca: Issued, stack_leaf: Issued) -> None:
    result = judge(stack_leaf.pem + own_ca.pem, own_ca, offered=handshakes.PROTOCOLS)
    assert fails(result) == ["https:443: TLS1.0 is offered", "https:443: TLS1.1 is offered"]
    assert result.protocols == dict.fromkeys(handshakes.PROTOCOLS, True)


def test_no_tls_1_3_warns_and_no_tls_1_2_fails(own_ca: Issued, stack_leaf: Issued) -> None:
    only_12 = judge(stack_leaf.pem + own_ca.pem, own_ca, offered=("TLS1.2",))
    assert only_12.verdict == WARN
    only_13 = judge(stack_leaf.pem + own_ca.pem, own_ca, offered=("TLS1.3",))
    assert fails(only_13) == ["https:443: TLS1.2 is not offered"]


def test_an_endpoint_without_a_handshake_fails_and_says_why() -> None:
    nothing = Handshake(None, "", False, "connect:errno=111")
    result = judgement.evaluate_endpoint(
        endpoint("imaps", (HOST,)),
        Probe({HOST: nothing}, dict.fromkeys(handshakes.PROTOCOLS, nothing)),
        NOW,
        [],
        [],
    )
    assert fails(result) == ["imaps:443: no TLS handshake (connect:errno=111)"]
    assert result.leaf is None and result.chain is None


# --- ACME state ------------------------------------------------------------------------------------


def write_acme(root: Path, text: str) -> None:
    (root / ".mailstack").mkdir(exist_ok=True)
    (root / ".mailstack" / "acme.json").write_text(text)


def test_no_acme_state_says_nothing(tmp_path: Path) -> None:
    assert tlscheck.read_acme_state(tmp_path) == (None, [])


def test_a_failed_acme_renewal_is_a_failure_with_its_error(tmp_path: Path) -> None:
    write_acme(
        tmp_path,
        json.dumps(
            {
                "ok": False,
                "checked": "2026-06-01T03:00:00+00:00",
                "error": "urn:ietf:params:acme:error:dns: NXDOMAIN looking up A for mail.example.org",
                "not_after": "2026-06-20T00:00:00+00:00",
            }
        ),
    )
    state, findings = tlscheck.read_acme_state(tmp_path)
    assert state is not None and not state.ok
    assert [f.verdict for f in findings] == [FAIL]
    assert "NXDOMAIN looking up A for mail.example.org" in findings[0].what
    assert tlscheck.TlsCheckReport((), state, tuple(findings)).exit_code == 1


def test_a_good_acme_state_is_no_finding_and_garbage_only_warns(tmp_path: Path) -> None:
    write_acme(tmp_path, '{"ok": true, "checked": "2026-06-01T03:00:00+00:00", "error": null}')
    state, findings = tlscheck.read_acme_state(tmp_path)
    assert state is not None and state.ok and state.not_after is None and findings == []
    write_acme(tmp_path, "{not json")
    state, findings = tlscheck.read_acme_state(tmp_path)
    assert state is None and [f.verdict for f in findings] == [WARN]


# --- the endpoints of a stack ------------------------------------------------------------------


def test_every_published_tls_port_is_an_endpoint_with_its_names() -> None:
    config = validate_config(
        {
            "hostname": HOST,
            "domain": "example.test",
            "network": {"ports": {"imaps": 10993}},
        }
    )
    endpoints = tlscheck.stack_endpoints(config, ["example.test", "other.test"])
    assert [(e.name, e.port, e.starttls) for e in endpoints] == [
        ("smtp", 25, "smtp"),
        ("submissions", 465, None),
        ("submission", 587, "smtp"),
        ("imap", 143, "imap"),
        ("imaps", 10993, None),
        ("managesieve", 4190, "sieve"),
        ("https", 443, None),
    ]
    assert {e.address for e in endpoints} == {"127.0.0.1"}  # bound to 0.0.0.0
    assert endpoints[0].names == (HOST,)
    assert endpoints[-1].names == (
        *HTTPS_NAMES,
        "mta-sts.other.test",
        "autoconfig.other.test",
        "autodiscover.other.test",
    )


# --- the adapter against a real TLS server ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


@pytest.fixture
def s_server(
    tmp_path: Path, own_ca: Issued, stack_leaf: Issued, request: pytest.FixtureRequest
) -> Iterator[int]:
    """`openssl s_server` on loopback serving the stack certificate; its extra arguments come
    from the test's parametrisation."""
    (tmp_path / "cert.pem").write_text(stack_leaf.pem)
    (tmp_path / "chain.pem").write_text(own_ca.pem)
    (tmp_path / "key.pem").write_bytes(
        stack_leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(tmp_path / "cert.pem"),
            "-key",
            str(tmp_path / "key.pem"),
            "-cert_chain",
            str(tmp_path / "chain.pem"),
            "-www",
            *request.param,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    "s_server",
    [("-no_tls1", "-no_tls1_1")],
    indirect=True,
)
def test_the_probe_reads_chain_and_protocols_of_a_modern_server(
    s_server: int, own_ca: Issued
) -> None:
    target = Endpoint("imaps", "127.0.0.1", s_server, None, (HOST,))
    probes = handshakes.openssl_probe([target])
    result = judgement.evaluate_endpoint(
        target, probes["imaps"], datetime.datetime.now(datetime.UTC), [own_ca.certificate], []
    )
    assert result.protocols == {"TLS1.0": False, "TLS1.1": False, "TLS1.2": True, "TLS1.3": True}
    assert result.chain is not None and result.chain.anchor == ANCHOR_OWN_CA
    assert [c.served for c in result.chain.certificates] == [True, True]


@pytest.mark.parametrize(
    "s_server",
    [("-cipher", "DEFAULT@SECLEVEL=0")],  # lets this server speak TLS 1.0 and 1.1
    indirect=True,
)
def test_the_probe_finds_tls_1_0_and_1_1_when_a_server_offers_them(
    s_server: int, own_ca: Issued
) -> None:
    target = Endpoint("imaps", "127.0.0.1", s_server, None, (HOST,))
    probes = handshakes.openssl_probe([target])
    assert {version: h.protocol for version, h in probes["imaps"].by_protocol.items()} == {
        version: version for version in handshakes.PROTOCOLS
    }
    result = judgement.evaluate_endpoint(
        target, probes["imaps"], datetime.datetime.now(datetime.UTC), [own_ca.certificate], []
    )
    assert fails(result) == [
        f"imaps:{s_server}: TLS1.0 is offered",
        f"imaps:{s_server}: TLS1.1 is offered",
    ]


def test_nothing_listening_is_no_handshake_with_the_clients_reason() -> None:
    target = Endpoint("imaps", "127.0.0.1", free_port(), None, (HOST,))
    handshake = handshakes.openssl_probe([target])["imaps"].by_name[HOST]
    assert handshake.protocol is None and handshake.error == "Connection refused"


# --- the command --------------------------------------------------------------------------------


def init_stack(root: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "init",
            "--non-interactive",
            "--hostname",
            HOST,
            "--domain",
            "example.test",
            "--bind",
            "127.0.0.1",
            "--dir",
            str(root),
        ],
    )
    assert result.exit_code == 0, result.output
    config_path = root / "mailstack.yaml"
    config = yaml.safe_load(config_path.read_text())
    # Ports nothing listens on: the stack is not running.
    config["network"]["ports"] = {
        name: free_port()
        for name in (
            "smtp",
            "submissions",
            "submission",
            "imap",
            "imaps",
            "http",
            "https",
            "managesieve",
        )
    }
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_check_tls_on_a_stack_that_is_down_fails_each_endpoint(stack_root: Path) -> None:
    init_stack(stack_root)
    result = CliRunner().invoke(app, ["check", "tls", "--json", "--dir", str(stack_root)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [e["name"] for e in report["endpoints"]] == [
        "smtp",
        "submissions",
        "submission",
        "imap",
        "imaps",
        "managesieve",
        "https",
    ]
    for endpoint in report["endpoints"]:
        assert endpoint["verdict"] == FAIL
        assert endpoint["findings"][0]["what"].endswith("no TLS handshake (Connection refused)")


def test_check_tls_of_a_domain_the_stack_does_not_have_is_one_line_exit_2(
    stack_root: Path,
) -> None:
    init_stack(stack_root)
    result = CliRunner().invoke(app, ["check", "tls", "nope.test", "--dir", str(stack_root)])
    assert result.exit_code == 2
    assert "DOMAIN: 'nope.test' is not a mail domain of this stack" in result.output
    assert "Traceback" not in result.output


def test_check_tls_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["check", "tls", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Exit codes: 0 every endpoint good" in " ".join(result.output.split())
