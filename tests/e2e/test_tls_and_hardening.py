"""TLS on every endpoint, proven by testssl.sh; hardened containers, proven by docker inspect
and compose-lint. Every claim of SECURITY.md's security model that a tool can check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailstack import services
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.e2e.conftest import HOSTNAME, METRICS_PORT, PORTS, PROJECT, RunningStack

pytestmark = pytest.mark.e2e


# --- TLS: testssl.sh (Debian's testssl.sh; the command is `testssl`) --------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str  # the port's key in mailstack.yaml's network.ports
    starttls: str | None  # testssl's -t protocol, None for implicit TLS
    http: bool = False

    def vulnerability_checks(self) -> tuple[str, ...]:
        return (
            VULNERABILITY_CHECKS
            + (("ticketbleed",) if self.starttls is None else ())
            + (("BREACH",) if self.http else ())
        )


ENDPOINTS = (
    Endpoint("smtp", "smtp"),  # 25: opportunistic STARTTLS, as an MX must
    Endpoint("submissions", None),  # 465
    Endpoint("submission", "smtp"),  # 587
    Endpoint("imaps", None),  # 993
    Endpoint("imap", "imap"),  # 143
    Endpoint("pop3s", None),  # 995 (features.pop3, on in the session stack)
    Endpoint("pop3", "pop3"),  # 110 (features.pop3_starttls)
    Endpoint("https", None, http=True),  # 443
)

# -p protocols, -s cipher categories (NULL, anonymous, export, LOW, 3DES, obsolete CBC),
# -E every cipher per protocol, -f forward secrecy, -P server preference, -S certificate and
# chain, -U every vulnerability check. No --fast: it skips checks asserted below.
TESTSSL_CHECKS = ("-p", "-s", "-E", "-f", "-P", "-S", "-U")

# HIGH findings that are not a weakness of this stack, each with the reason it is accepted.
ACCEPTED_HIGH = {
    # The stack's own CA (tls.mode: selfsigned) runs no CRL or OCSP service. An ACME
    # certificate carries the CA's revocation information.
    "cert_revocation": "self-signed stack CA",
}

# The vulnerability checks of -U: each must have run and found nothing. testssl runs
# Ticketbleed on implicit TLS only and BREACH on HTTP only (see Endpoint.vulnerability_checks).
VULNERABILITY_CHECKS = (
    "heartbleed",
    "CCS",
    "ROBOT",
    "secure_renego",
    "secure_client_renego",
    "CRIME_TLS",
    "POODLE_SSL",
    "fallback_SCSV",
    "SWEET32",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
)
WEAK_CIPHER_CATEGORIES = (
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",  # obsolete CBC suites: Mozilla intermediate has none
)
# testssl's exit code adds up what its checks return (BREACH alone returns 7 on a non-HTTP
# port), so only its fatal codes (240 and up: cannot connect, bad options) mean "no result";
# the verdict comes from the JSON findings.
TESTSSL_FATAL = 240


@dataclass(frozen=True)
class Scan:
    endpoint: Endpoint
    findings: list[dict[str, str]]
    output: str

    def by_id(self, finding_id: str) -> dict[str, str]:
        found = [item for item in self.findings if item["id"] == finding_id]
        assert found, f"{self.endpoint.name}: testssl reported no {finding_id}\n{self.output}"
        return found[0]

    def ciphers(self) -> list[tuple[str, list[str]]]:
        """(protocol id, columns) of every cipher suite the server accepted (-E)."""
        accepted = []
        for item in self.findings:
            if item["id"].startswith("cipher-"):
                protocol = item["id"].split("_x")[0].removeprefix("cipher-")
                accepted.append((protocol, item["finding"].split()))
        return accepted


def _testssl_environment() -> dict[str, str]:
    # This machine points OpenSSL and friends at its own CA bundle; testssl must use the
    # system store plus the stack's CA (--add-ca) and nothing else.
    environment = dict(os.environ)
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        environment.pop(name, None)
    return environment


def _run_testssl(stack: RunningStack, endpoint: Endpoint, directory: Path) -> Scan:
    json_file = directory / f"{endpoint.name}.json"
    command = [
        "testssl",
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        # No DNS at all (the name is the certificate's, the address is loopback) and no
        # CRL/OCSP fetching (no --phone-out): the scan never leaves this machine.
        "--nodns",
        "none",
        "--ip",
        "127.0.0.1",
        "--add-ca",
        str(stack.ca_file),
        "--jsonfile",
        str(json_file),
        *TESTSSL_CHECKS,
        *(("-h",) if endpoint.http else ()),
        *(("-t", endpoint.starttls) if endpoint.starttls else ()),
        f"{HOSTNAME}:{PORTS[endpoint.name]}",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
        env=_testssl_environment(),
    )
    output = result.stdout + result.stderr
    assert result.returncode < TESTSSL_FATAL, f"testssl failed on {endpoint.name}:\n{output}"
    findings = json.loads(json_file.read_text())
    return Scan(endpoint, findings, output)


@pytest.fixture(scope="module")
def scans(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scan]:
    """One testssl run per endpoint, all at once (each spends most of its time waiting)."""
    if shutil.which("testssl") is None:
        pytest.fail("testssl is missing: run scripts/setup-host.sh --dev (Debian's testssl.sh)")
    directory = tmp_path_factory.mktemp("testssl")
    with ThreadPoolExecutor(max_workers=len(ENDPOINTS)) as pool:
        runs = [pool.submit(_run_testssl, stack, endpoint, directory) for endpoint in ENDPOINTS]
        scans = {run.result().endpoint.name: run.result() for run in runs}
    for name, scan in scans.items():  # the summary, for `pytest -s` and failure reports
        print(f"testssl {name}: {summary(scan)}")
    return scans


def summary(scan: Scan) -> str:
    """Protocols offered, the accepted suites and the findings counted by severity."""
    protocols = [
        label
        for protocol, label in (("SSLv2", "SSLv2"), ("SSLv3", "SSLv3"), ("TLS1", "TLS 1.0"),
                                ("TLS1_1", "TLS 1.1"), ("TLS1_2", "TLS 1.2"), ("TLS1_3", "TLS 1.3"))
        if scan.by_id(protocol)["finding"].startswith("offered")
    ]  # fmt: skip
    suites = sorted({columns[3] for _, columns in scan.ciphers()})
    severities: dict[str, int] = {}
    for item in scan.findings:
        severities[item["severity"]] = severities.get(item["severity"], 0) + 1
    counted = ", ".join(f"{severity} {count}" for severity, count in sorted(severities.items()))
    return f"{' + '.join(protocols)}; {len(suites)} suites ({' '.join(suites)}); {counted}"


def _endpoint_ids() -> list[str]:
    return [endpoint.name for endpoint in ENDPOINTS]


@pytest.mark.parametrize("name", _endpoint_ids())
def test_only_tls_1_2_and_1_3_are_offered(scans: dict[str, Scan], name: str) -> None:
    scan = scans[name]
    for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert scan.by_id(protocol)["finding"].startswith("not offered"), (name, protocol)
    for protocol in ("TLS1_2", "TLS1_3"):
        assert scan.by_id(protocol)["finding"].startswith("offered"), (name, protocol)


@pytest.mark.parametrize("name", _endpoint_ids())
def test_no_null_export_anonymous_or_weak_cipher_is_offered(
    scans: dict[str, Scan], name: str
) -> None:
    scan = scans[name]
    for category in WEAK_CIPHER_CATEGORIES:
        assert scan.by_id(category)["finding"] == "not offered", (name, category)
    assert scan.by_id("PFS")["finding"] == "offered", name


@pytest.mark.parametrize("name", _endpoint_ids())
def test_every_accepted_cipher_is_forward_secret_aead(scans: dict[str, Scan], name: str) -> None:
    ciphers = scans[name].ciphers()
    assert ciphers, f"{name}: testssl listed no cipher (-E)"
    for protocol, columns in ciphers:
        # columns: TLS, 1.2, hexcode, OpenSSL name, key exchange, bits, encryption, ...
        assert protocol in ("tls1_2", "tls1_3"), (name, columns)
        key_exchange, encryption = columns[4], columns[6]
        assert key_exchange in ("ECDH", "DH"), (name, columns)
        assert encryption in ("AESGCM", "ChaCha20"), (name, columns)


@pytest.mark.parametrize("name", _endpoint_ids())
def test_no_vulnerability_and_no_high_or_critical_finding(
    scans: dict[str, Scan], name: str
) -> None:
    scan = scans[name]
    for check in scan.endpoint.vulnerability_checks():
        assert scan.by_id(check)["severity"] in ("OK", "INFO"), (name, scan.by_id(check))
    # No compression, no client-initiated renegotiation (Mozilla intermediate).
    assert scan.by_id("CRIME_TLS")["finding"].startswith("not vulnerable"), name
    assert scan.by_id("secure_client_renego")["finding"] == "not vulnerable", name
    # testssl 3.0 rates a server that lets the client choose among its suites HIGH; with
    # only forward-secret AEAD suites on offer (asserted above) the choice cannot pick a weak
    # one, so Mozilla "intermediate" leaves it to the client and testssl 3.2 rates it INFO.
    accepted = dict(ACCEPTED_HIGH)
    if all(columns[6] in ("AESGCM", "ChaCha20") for _, columns in scan.ciphers()):
        accepted["cipher_order"] = "client's choice among strong suites only"
    flagged = [
        item
        for item in scan.findings
        if item["severity"] in ("HIGH", "CRITICAL", "FATAL")
        # Certificate findings carry " <cert#N>" when testssl saw the chain more than once.
        and item["id"].split(" <cert#")[0] not in accepted
    ]
    assert flagged == [], f"{name}: testssl flagged {flagged}"


@pytest.mark.parametrize("name", _endpoint_ids())
def test_certificate_chains_to_the_stack_ca_and_names_the_host(
    scans: dict[str, Scan], name: str
) -> None:
    scan = scans[name]
    assert scan.by_id("cert_chain_of_trust")["severity"] == "OK", name
    assert scan.by_id("cert_trust")["severity"] == "OK", name


def test_https_sends_hsts(scans: dict[str, Scan]) -> None:
    assert scans["https"].by_id("HSTS_time")["severity"] == "OK"


# --- Hardened containers: docker inspect --------------------------------------------------------

# Capabilities each container adds back after `cap_drop: [ALL]`, and why (SECURITY.md has
# the same table). Anything else, in any container, fails the test.
# What each service gets back after dropping every capability: its registry record (SECURITY.md
# says why for each; tests/unit/test_services.py holds compose.yaml and that table to it).
CAPABILITIES: dict[str, frozenset[str]] = {
    service.name: frozenset(service.capabilities) for service in services.SERVICES
}
# Services whose root filesystem may stay writable, with the reason. None needs it today.
WRITABLE_ROOT: dict[str, str] = {}
# Container port -> mailstack.yaml port name, per publishing service; nothing else is published.
PUBLISHED: dict[str, dict[str, str]] = {
    "postfix": {"25/tcp": "smtp", "465/tcp": "submissions", "587/tcp": "submission"},
    # POP3's two doors: features.pop3 and pop3_starttls are on in the session stack.
    "dovecot": {
        "143/tcp": "imap",
        "993/tcp": "imaps",
        "4190/tcp": "managesieve",
        "110/tcp": "pop3",
        "995/tcp": "pop3s",
    },
    "front": {"80/tcp": "http", "443/tcp": "https"},
}
# The engine's own state: never bind-mounted into a container.
DOCKER_ENGINE_PATHS = ("/var/run/docker", "/run/docker", "/var/lib/docker")


@pytest.fixture(scope="module")
def containers(stack: RunningStack) -> dict[str, dict[str, Any]]:
    """`docker inspect` of every container of the e2e project, by Compose service name."""
    ids = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ids, "no running container in the e2e project"
    inspected = json.loads(
        subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
    )
    return {item["Config"]["Labels"]["com.docker.compose.service"]: item for item in inspected}


def test_every_running_service_is_in_the_registry(
    containers: dict[str, dict[str, Any]],
) -> None:
    assert {"db", "redis", "resolver", "rspamd", "dovecot", "postfix", "front", "sink"} <= set(
        containers
    )
    assert set(containers) <= set(CAPABILITIES), "a new service needs its record in services.py"


def test_containers_drop_every_capability_and_add_back_only_their_allowlist(
    containers: dict[str, dict[str, Any]],
) -> None:
    wrong = {}
    for service, item in containers.items():
        host = item["HostConfig"]
        dropped = {cap.removeprefix("CAP_") for cap in host["CapDrop"] or []}
        added = {cap.removeprefix("CAP_") for cap in host["CapAdd"] or []}
        if dropped != {"ALL"} or added != CAPABILITIES[service]:
            wrong[service] = {"dropped": sorted(dropped), "added": sorted(added)}
    assert wrong == {}


def test_no_container_is_privileged_or_can_gain_privileges(
    containers: dict[str, dict[str, Any]],
) -> None:
    for service, item in containers.items():
        host = item["HostConfig"]
        assert host["Privileged"] is False, service
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert not host.get("Devices"), service
        # No host namespaces: each container has its own network, process and IPC view.
        assert host["NetworkMode"] != "host", service
        assert host["PidMode"] in ("", "private"), service
        assert host["IpcMode"] in ("private", "none", "shareable"), service
        assert host["UsernsMode"] != "host", service


def test_root_filesystems_are_read_only(containers: dict[str, dict[str, Any]]) -> None:
    writable = [
        service
        for service, item in containers.items()
        if not item["HostConfig"]["ReadonlyRootfs"] and service not in WRITABLE_ROOT
    ]
    assert writable == []


def test_memory_and_process_limits_are_set(containers: dict[str, dict[str, Any]]) -> None:
    for service, item in containers.items():
        host = item["HostConfig"]
        assert host["Memory"] > 0, service
        assert (host["PidsLimit"] or 0) > 0, service


def test_no_docker_socket_and_configuration_mounted_read_only(
    containers: dict[str, dict[str, Any]],
) -> None:
    for service, item in containers.items():
        for mount in item["Mounts"]:
            source, destination = mount.get("Source", ""), mount["Destination"]
            assert "docker.sock" not in source and "docker.sock" not in destination, service
            if mount["Type"] == "bind":
                assert not source.startswith(DOCKER_ENGINE_PATHS), (service, mount)
                # Configuration, overrides, certificates and secrets: never written back.
                assert mount["RW"] is False, (service, mount)


def test_only_the_mail_and_web_ports_are_published_and_only_on_loopback(
    containers: dict[str, dict[str, Any]],
) -> None:
    published: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for service, item in containers.items():
        bindings = item["HostConfig"]["PortBindings"] or {}
        live = item["NetworkSettings"]["Ports"] or {}
        for port, hosts in live.items():
            if hosts:  # exposed but unpublished ports are listed with None
                assert port in bindings, (service, port)
        if bindings:
            published[service] = {
                port: sorted((host["HostIp"], host["HostPort"]) for host in hosts)
                for port, hosts in bindings.items()
            }
    expected = {
        service: {port: [("127.0.0.1", str(PORTS[name]))] for port, name in ports.items()}
        for service, ports in PUBLISHED.items()
    }
    # monitoring.metrics (on in the session stack): its one port, on loopback too.
    expected["metrics"] = {"9154/tcp": [("127.0.0.1", str(METRICS_PORT))]}
    assert published == expected


def test_the_back_end_network_is_internal(containers: dict[str, dict[str, Any]]) -> None:
    network = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", f"{PROJECT}_backend"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    assert network["Internal"] is True
    back_end_only = {"db", "redis", "rspamd", "sink"}
    for service in back_end_only & set(containers):
        networks = set(containers[service]["NetworkSettings"]["Networks"])
        assert networks == {f"{PROJECT}_backend"}, (service, networks)


# --- compose-lint on the generated compose file -------------------------------------------------


def compose_lint(compose_file: Path) -> list[dict[str, Any]]:
    """compose-lint's findings (JSON) for one Compose file."""
    tool = Path(sys.executable).parent / "compose-lint"
    if not tool.exists():
        pytest.fail("compose-lint is missing: run scripts/setup-host.sh --dev")
    result = subprocess.run(
        [str(tool), "check", "--format", "json", "--fail-on", "high", str(compose_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0: nothing at or above --fail-on; 1: findings at or above it; 2: could not lint it all.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    findings: list[dict[str, Any]] = report["findings"]
    return findings


def assert_nothing_high_or_critical(findings: list[dict[str, Any]]) -> None:
    serious = [f for f in findings if f["severity"] in ("high", "critical")]
    assert serious == [], json.dumps(serious, indent=2)


def test_compose_lint_finds_nothing_high_or_critical(stack: RunningStack) -> None:
    assert_nothing_high_or_critical(compose_lint(stack.root / "compose.yaml"))


def test_compose_lint_finds_nothing_high_or_critical_in_production(tmp_path: Path) -> None:
    # The e2e stack is a sandbox without antivirus; production adds clamav and egress.
    config = validate_config(
        {
            "hostname": "mail.example.org",
            "domain": "example.org",
            "mode": "production",
            "features": {"antivirus": True},
        }
    )
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_bytes(render_stack(RenderInputs(config, "0.0.0-test"))["compose.yaml"])
    assert b"\n  clamav:" in compose_file.read_bytes()
    assert_nothing_high_or_critical(compose_lint(compose_file))


def test_private_keys_are_readable_only_by_root_inside_dovecot(stack: RunningStack) -> None:
    # The TLS key and mail_crypt's private key: root (the Dovecot master) reads them, the
    # processes that handle a user's session (vmail, dovenull) cannot.
    for path in ("/etc/mailstack/tls/key.pem", "/run/secrets/mail_crypt_private_key"):
        for user in ("vmail", "dovenull"):
            attempt = stack.compose(
                "exec", "-T", "--user", user, "dovecot", "cat", path, check=False
            )
            assert attempt.returncode != 0, (user, path)
            assert b"Permission denied" in attempt.stderr, (user, path, attempt.stderr)
