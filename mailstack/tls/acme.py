"""ACME certificates (tls.mode: acme): obtained and renewed by certbot, installed by mailstack.

certbot (Debian's, in the acme image) runs in a one-shot container on the frontend network,
answers HTTP-01 through the front (it writes into <stack>/acme/webroot, which nginx serves at
/.well-known/acme-challenge/ on port 80) and keeps its account in <stack>/acme/letsencrypt.
mailstack decides when to renew (pure, below), hands certbot a request signed by the served
key (kept across renewals: DANE's TLSA records name it, mailstack.tls.dane), copies the new
certificate into <stack>/tls/ (what every daemon reads) and reloads postfix, dovecot and
nginx: each finishes the connections it has and serves new ones with the new certificate.

Why certbot: packaged by Debian (security updates with the host's), the EFF's reference
client, and the webroot authenticator needs no port of its own. The container gets no
Docker socket and no private key: the reloads are done by mailstack, which already drives
Compose.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack.adapters.docker import DOCKER, Bind, OneShot
from mailstack.errors import MailstackError, UsageError
from mailstack.images import builder
from mailstack.mailauth import dkim, dnsrecords
from mailstack.runtime import schedule
from mailstack.stack.config import Config
from mailstack.stack.config_sections import Tls
from mailstack.stack.stackdir import STATE_DIR, Stack, atomic_write
from mailstack.tls import certreload
from mailstack.tls.certs import (
    TLS_DIR,
    install_chain,
    key_pem,
    load_certificate,
    matching_certificate,
    names_of,
    server_key,
)

ACME_DIR = "acme"
REQUEST = "request.csr"  # <stack>/acme/request.csr: the names and mailstack's key, for certbot
ISSUED = "issued"  # <stack>/acme/issued/: certbot's output for the last order (emptied first)
STATE_FILE = "acme.json"
# Names the CA could not validate are tried again after this (see waiting_for_dns).
RETRY_UNVALIDATED = datetime.timedelta(hours=48)
CONTAINER_ACME = "/acme"  # where <stack>/acme is mounted in the acme container
WEBROOT = "webroot"  # <stack>/acme/webroot: the front serves it at /.well-known/acme-challenge/
CERTBOT_DIR = "letsencrypt"  # <stack>/acme/letsencrypt: certbot's account
TRUSTED_CA = "/etc/mailstack/trusted-ca.pem"  # tls.ca_file inside the container


def wanted_names(config: Config, domains: list[str]) -> list[str]:
    """The hostname first (the subject), then the web names the front serves."""
    return [config.hostname, *dnsrecords.certificate_names(config, domains)]


def renewal_reason(
    cert: x509.Certificate | None,
    stack_ca: x509.Certificate | None,
    wanted: list[str],
    now: datetime.datetime,
    renew_days: int,
) -> str | None:
    """Why the served certificate must be replaced by a new ACME one; None: it is good."""
    if cert is None:
        return "there is no certificate yet"
    if stack_ca is not None and cert.issuer == stack_ca.subject:
        return "the stack serves its own self-signed placeholder"
    missing = sorted(set(wanted) - set(names_of(cert)))
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=renew_days):
        return f"it expires in {max(left.days, 0)} days (renewal {renew_days} days before)"
    return None


def certbot_args(config: Config) -> list[str]:
    """certbot's command line for one order of the names in the request (acme/request.csr).
    A request, not certbot's own key: the server key outlives its certificates, so DANE's
    TLSA records stay true across renewals (mailstack.tls.dane)."""
    issued = f"{CONTAINER_ACME}/{ISSUED}"
    args = [
        "certonly", "--non-interactive", "--agree-tos",
        "--config-dir", f"{CONTAINER_ACME}/{CERTBOT_DIR}",
        "--work-dir", "/tmp/certbot/work", "--logs-dir", "/tmp/certbot/logs",  # noqa: S108
        "--webroot", "--webroot-path", f"{CONTAINER_ACME}/{WEBROOT}",
        "--server", config.tls.acme_server,
        "--csr", f"{CONTAINER_ACME}/{REQUEST}",
        "--cert-path", f"{issued}/cert.pem",
        "--chain-path", f"{issued}/chain.pem",
        "--fullchain-path", f"{issued}/fullchain.pem",
    ]  # fmt: skip
    if config.tls.acme_email:
        args += ["--email", config.tls.acme_email]
    else:
        args.append("--register-unsafely-without-email")
    return args


def certificate_request(key: ec.EllipticCurvePrivateKey, names: list[str]) -> bytes:
    """A PEM request for every name (the hostname first, the subject), signed by the key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def certbot_job(stack: Stack, image: str, certbot: list[str]) -> OneShot:
    """The acme image on the stack's frontend network (out to the ACME server, as the
    front's own answers come back), acme/ mounted, nothing else."""
    binds = [Bind(str(stack.dir.root / ACME_DIR), CONTAINER_ACME)]
    env: tuple[tuple[str, str], ...] = ()
    if stack.config.tls.ca_file:
        binds.append(Bind(stack.config.tls.ca_file, TRUSTED_CA, read_only=True))
        env = (("REQUESTS_CA_BUNDLE", TRUSTED_CA),)
    return OneShot(
        image,
        tuple(certbot),
        name=f"{stack.config.project}-acme",
        network=f"{stack.config.project}_frontend",
        binds=tuple(binds),
        env=env,
        tmpfs=("/tmp:mode=1777",),  # noqa: S108  # the container's own tmpfs
        read_only=True,
        log=True,  # certbot prints no secret; its log helps when an order fails
    )


def prepare_directories(root: Path) -> None:
    """acme/ and its webroot readable by nginx's workers; certbot's state for root alone."""
    acme = root / ACME_DIR
    acme.mkdir(mode=0o755, exist_ok=True)
    (acme / WEBROOT).mkdir(mode=0o755, exist_ok=True)
    (acme / CERTBOT_DIR).mkdir(mode=0o700, exist_ok=True)


@dataclass(frozen=True)
class RenewResult:
    renewed: bool
    reason: str | None  # why it was renewed (or None: nothing was due)
    not_after: datetime.datetime
    names: tuple[str, ...]  # the names the certificate covers
    reloaded: tuple[str, ...]
    waiting: tuple[str, ...] = ()  # names the CA could not validate (yet), with its reason

    def __str__(self) -> str:
        expiry = f"valid until {self.not_after:%Y-%m-%d} ({', '.join(self.names)})"
        if not self.renewed:
            line = f"certificate not due for renewal: {expiry}"
            if self.waiting:
                line += (
                    f"; not validated yet: {', '.join(self.waiting)} (tried again "
                    f"{RETRY_UNVALIDATED.days * 24} h after the last issuance, or with --force)"
                )
            return line
        line = f"new certificate ({self.reason}): {expiry}"
        if self.reloaded:
            line += f"; reloaded {', '.join(self.reloaded)}"
        if self.waiting:
            line += f"\nnot validated, tried again in 48 h: {'; '.join(self.waiting)}"
        return line


class AcmeFailed(MailstackError):
    pass


def renew(
    stack: Stack,
    *,
    force: bool = False,
    now: datetime.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> RenewResult:
    """Obtain a certificate when one is due (or forced, or for `key`: a DANE rollover's),
    install it and reload the daemons. Each order keeps the served key unless given one.
    Every outcome is recorded in .mailstack/acme.json for `status` and `check tls`."""
    config = stack.config
    if config.tls.mode != "acme":
        raise UsageError(
            f"tls.mode: {config.tls.mode!r} gets no ACME certificates",
            hint="set tls.mode: acme in mailstack.yaml, then `mailstack render` and `up`",
        )
    now = now or datetime.datetime.now(datetime.UTC)
    root = stack.dir.root
    names = wanted_names(config, dkim.signing_domains(root))
    current = load_certificate(root / TLS_DIR / "cert.pem")
    reason = renewal_reason(
        current, load_certificate(root / TLS_DIR / "ca.pem"), names, now, config.tls.renew_days
    )
    if key is not None:
        reason = "the next key goes into service"
    elif force and reason is None:
        reason = "renewal forced"
    previous = read_state(root)
    if reason and not force and waiting_for_dns(current, previous, names, now, config.tls):
        reason = None
    if reason is None:
        assert current is not None  # noqa: S101  # renewal_reason says "no certificate" then
        write_state(root, previous, ok=True, now=now, error=None, cert=current)
        covered = set(names_of(current))
        return RenewResult(
            False,
            None,
            current.not_valid_after_utc,
            tuple(name for name in names if name in covered),
            (),
            tuple(name for name in names if name not in covered),
        )
    key = key or server_key(root)
    try:
        fresh, failures = _obtain(stack, names, key)
    except AcmeFailed as failure:
        write_state(root, previous, ok=False, now=now, error=failure.message, cert=current)
        raise
    reloaded = tuple(certreload.reload_daemons(stack, stack.compose.running_services()))
    covered = set(names_of(fresh))
    issued = AcmeState(
        True,
        issued=now.isoformat(timespec="seconds"),
        unvalidated=tuple(name for name in names if name not in covered),
    )
    write_state(root, issued, ok=True, now=now, error=None, cert=fresh)
    return RenewResult(
        True,
        reason,
        fresh.not_valid_after_utc,
        tuple(n for n in names if n in covered),
        reloaded,
        tuple(f"{n} ({failures.get(n, 'not validated')})" for n in names if n not in covered),
    )


def waiting_for_dns(
    current: x509.Certificate | None,
    previous: AcmeState | None,
    names: list[str],
    now: datetime.datetime,
    settings: Tls,
) -> bool:
    """Names the CA could not validate at the last issuance are ordered again only after
    RETRY_UNVALIDATED, unless the certificate is due anyway: until their DNS is published
    each order would fail them again, and the CA limits failed validations and duplicate
    certificates. A name not tried yet (a new domain) is ordered at once."""
    if current is None or renewal_reason(current, None, [], now, settings.renew_days):
        return False
    missing = {name for name in names if name not in names_of(current)}
    if previous is None or previous.issued is None:
        return False
    try:
        issued = datetime.datetime.fromisoformat(previous.issued)
    except ValueError:
        return False
    return missing <= set(previous.unvalidated) and now - issued < RETRY_UNVALIDATED


def _obtain(
    stack: Stack, names: list[str], key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, dict[str, str]]:
    """One order for every name; when the CA validates the hostname but not some other
    names (a new domain whose DNS is not published yet), one more for the names it did."""
    root = stack.dir.root
    prepare_directories(root)
    config = stack.config
    image = builder.ensure_images(
        root,
        [ACME_DIR],
        registry=config.images.registry,
        apt_sources=config.images.apt_sources_path,
    )[ACME_DIR]
    ordered, output = _order(stack, image, names, key)
    failures = validation_failures(output)
    validated = [name for name in names if name not in failures]
    if not ordered and failures and names[0] in validated:
        ordered, output = _order(stack, image, validated, key)
    if not ordered:
        raise AcmeFailed(
            f"the ACME server did not issue a certificate for {', '.join(names)}: "
            + certbot_error(output),
            hint="each name needs an A record pointing at this host and port 80 open to the "
            "internet (`mailstack dns records`); then `mailstack tls renew`",
        )
    try:
        chain = (root / ACME_DIR / ISSUED / "fullchain.pem").read_bytes()
        fresh = matching_certificate(chain, key_pem(key))
    except (OSError, ValueError) as error:
        raise AcmeFailed(f"certbot's new certificate cannot be installed: {error}") from None
    if names[0] not in names_of(fresh):  # validated without the hostname: worse than none
        raise AcmeFailed(
            f"the ACME server could not validate {names[0]}: " + certbot_error(output),
            hint="the hostname needs an A record pointing at this host and port 80 open",
        )
    return install_chain(root, chain, key_pem(key)), failures


def _order(
    stack: Stack, image: str, names: list[str], key: ec.EllipticCurvePrivateKey
) -> tuple[bool, str]:
    """certbot run once for a request of these names: (issued, its output)."""
    root = stack.dir.root
    atomic_write(root / ACME_DIR / REQUEST, certificate_request(key, names), 0o644)
    issued = root / ACME_DIR / ISSUED
    shutil.rmtree(issued, ignore_errors=True)  # certbot refuses to overwrite its output
    issued.mkdir(mode=0o700)
    job = certbot_job(stack, image, certbot_args(stack.config))
    result = DOCKER.run(job, check=False, timeout=900, what="certbot")
    return result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")


def validation_failures(output: str) -> dict[str, str]:
    """{name: the CA's reason} for each name certbot reports it could not validate."""
    failures: dict[str, str] = {}
    domain = None
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("Domain:"):
            domain = line.removeprefix("Domain:").strip()
        elif line.startswith("Detail:") and domain:
            failures[domain] = line.removeprefix("Detail:").strip()[:200]
            domain = None
    return failures


def certbot_error(output: str) -> str:
    """The line of certbot's output that says what went wrong (the CA's own words if any)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("Detail:", "urn:ietf:params:acme:error", "An unexpected error", "Error"):
        for line in lines:
            if marker in line:
                return line[:300]
    return lines[-1][:300] if lines else "certbot printed nothing"


@dataclass(frozen=True)
class AcmeState:
    """.mailstack/acme.json: the last renewal's outcome (for `status` and `check tls`), and
    the last issuance's time and the names the CA could not validate then."""

    ok: bool
    checked: str = ""
    error: str | None = None
    not_after: str | None = None
    issued: str | None = None
    unvalidated: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps(
            {**asdict(self), "unvalidated": list(self.unvalidated)}, indent=2
        ).encode()

    @classmethod
    def from_json(cls, text: str) -> AcmeState:
        """Raises AcmeStateUnreadable when the text is not a state this module wrote."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise AcmeStateUnreadable(str(error)) from None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise AcmeStateUnreadable('it has no "ok" field')

        def text_of(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value is not None else None

        unvalidated = data.get("unvalidated") or ()
        return cls(
            data["ok"],
            text_of("checked") or "",
            text_of("error"),
            text_of("not_after"),
            text_of("issued"),
            tuple(str(name) for name in unvalidated) if isinstance(unvalidated, list) else (),
        )


class AcmeStateUnreadable(ValueError):
    pass


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def write_state(
    root: Path,
    kept: AcmeState | None,
    *,
    ok: bool,
    now: datetime.datetime,
    error: str | None,
    cert: x509.Certificate | None,
) -> None:
    """This run's outcome; from `kept` the last issuance's time and unvalidated names."""
    state = AcmeState(
        ok,
        now.isoformat(timespec="seconds"),
        error,
        cert.not_valid_after_utc.isoformat() if cert else None,
        kept.issued if kept else None,
        kept.unvalidated if kept else (),
    )
    atomic_write(state_path(root), state.to_json() + b"\n")


def load_state(root: Path) -> AcmeState | None:
    """The last renewal's outcome; None when none ran. Raises AcmeStateUnreadable."""
    try:
        text = state_path(root).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise AcmeStateUnreadable(str(error)) from None
    return AcmeState.from_json(text)


def read_state(root: Path) -> AcmeState | None:
    """The last renewal's outcome, or None when none ran or the file is unreadable (the next
    renewal rewrites it)."""
    try:
        return load_state(root)
    except AcmeStateUnreadable:
        return None


def after_up(stack: Stack) -> list[str]:
    """What `up` does in mode acme once the front serves: obtain the first certificate (or
    a due one), and schedule renewals when the host runs systemd. Lines for the operator;
    a failure is said, not raised: the stack is up, with the certificate it had."""
    lines: list[str] = []
    try:
        lines.append(str(renew(stack)))
    except MailstackError as failure:
        lines.append(f"warning: {failure.message}")
        if failure.hint:
            lines.append(f"  {failure.hint}")
    timer = schedule.renewal_timer(stack.dir.root, stack.config)
    if schedule.systemd_running() and not schedule.installed(timer):
        lines.append(str(schedule.install(timer)))
    elif not schedule.installed(timer):
        lines.append(
            "renewals are not scheduled (systemd is not running here): run `mailstack tls "
            "renew` twice a day from your scheduler (it renews only when due)"
        )
    return lines
