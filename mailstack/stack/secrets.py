"""Secrets: generated once with a CSPRNG, one file each (0600) in secrets/ (0700).

Two kinds: random tokens (passwords) and key pairs (a PEM private key and its PEM public
key, two files). Neither is ever replaced once it exists.
"""

from __future__ import annotations

import os
import secrets as csprng
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack.errors import MailstackError

SECRETS_DIR = "secrets"
MFA_KEY = "mfa_key"

# name -> what it protects: random tokens, 256 bits each.
TOKEN_SECRETS: dict[str, str] = {
    "db_admin_password": "PostgreSQL superuser (schema migrations, backups)",
    "db_postfix_password": "PostgreSQL role postfix (read-only lookups)",
    "db_dovecot_password": "PostgreSQL role dovecot (read-only lookups)",
    "redis_password": "Redis (rspamd's statistics and rate limits)",
    "rspamd_controller_password": "rspamd controller (web UI and learning)",
    "srs_secret": "postsrsd's SRS key (forwarded mail; keep it: bounces verify against it)",
    "bans_api_key": "the bans service's policy API (Dovecot asks it about every login)",
    "db_roundcube_password": "PostgreSQL role roundcube (the webmail's own database)",
    "roundcube_des_key": "Roundcube's session key (encrypts the IMAP password in a session)",
    "db_admin_api_password": "PostgreSQL role mailstack_admin (the admin service's API)",
    # Read as a 256-bit AES key by mailstack.identity.sealing (the token is its base64url).
    MFA_KEY: "AES-GCM key sealing every TOTP secret in the database (second factors)",
    # Sent by the webmail's plugin with every question to the admin service's internal
    # endpoints (the webmail's second factor), which admit nothing else.
    "webmail_mfa_key": "the webmail's key to the admin service's second-factor checks",
    # monitoring.metrics: what a scraper shows as "Authorization: Bearer <token>".
    "metrics_token": "the metrics endpoint's bearer token (Prometheus, docs/metrics.md)",
    # Opens rspamd's read-only controller commands (its /metrics) to the metrics service.
    "rspamd_metrics_password": "rspamd controller, read-only (the metrics service)",
    # The metrics service's logins to Redis (an ACL user: INFO and PING only) and PostgreSQL
    # (mailstack_metrics: pg_monitor, the `postgres` database only, from its address only).
    "redis_metrics_password": "Redis ACL user metrics, INFO only (the metrics service)",
    "db_metrics_password": "PostgreSQL role mailstack_metrics, pg_monitor (the metrics service)",
    # A cluster's mailbox back ends show it to each other's doveadm server (`mailbox move`).
    "doveadm_password": "Dovecot's doveadm server on a cluster's back ends (mailbox moves)",
}


@dataclass(frozen=True)
class KeyPairSecret:
    """An EC key pair kept as two secrets: `<stem>_private_key` and `<stem>_public_key`."""

    stem: str
    purpose: str

    @property
    def private_name(self) -> str:
        return f"{self.stem}_private_key"

    @property
    def public_name(self) -> str:
        return f"{self.stem}_public_key"


KEY_PAIR_SECRETS: tuple[KeyPairSecret, ...] = (
    # Dovecot's global mail_crypt keys: without the private key the stored mail is unreadable.
    KeyPairSecret("mail_crypt", "Dovecot mail_crypt (encrypts every stored message)"),
)

# Every secret by name -> what it protects. Each is handed to containers as a Compose file
# secret (/run/secrets/<name>), never as an environment variable.
SECRET_NAMES: dict[str, str] = {
    **TOKEN_SECRETS,
    **{pair.private_name: f"{pair.purpose}, private key" for pair in KEY_PAIR_SECRETS},
    **{pair.public_name: f"{pair.purpose}, public key" for pair in KEY_PAIR_SECRETS},
}

# The backup repository's password: kept apart from SECRET_NAMES because no container of the
# stack gets it (only the one-shot backup container). Without it no backup can be read, so the
# operator is told once, when it is made, to keep a copy somewhere else.
BACKUP_PASSWORD = "backup_password"  # noqa: S105  # a file name, not a password
BACKUP_SECRETS: dict[str, str] = {BACKUP_PASSWORD: "the backup repository (restic)"}

TOKEN_BYTES = 32  # 256 bits
# P-521: the curve Dovecot's own mail_crypt examples use; mail kept for years gets the margin.
KEY_PAIR_CURVE = ec.SECP521R1()


@dataclass(frozen=True)
class SecretsReport:
    created: tuple[str, ...]
    kept: tuple[str, ...]


def ensure_secrets(
    stack_dir: Path,
    tokens: dict[str, str] = TOKEN_SECRETS,
    key_pairs: tuple[KeyPairSecret, ...] = KEY_PAIR_SECRETS,
) -> SecretsReport:
    """Create every missing secret; never change one that exists. Fix loose permissions."""
    directory = stack_dir / SECRETS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
    created: list[str] = []
    kept: list[str] = []
    for name in sorted(tokens):
        path = directory / name
        if path.exists():
            path.chmod(0o600)
            kept.append(name)
            continue
        _write_new_secret(path, (csprng.token_urlsafe(TOKEN_BYTES) + "\n").encode("ascii"))
        created.append(name)
    for pair in key_pairs:
        made = _ensure_key_pair(directory, pair)
        for name in (pair.private_name, pair.public_name):
            (created if name in made else kept).append(name)
    return SecretsReport(tuple(created), tuple(kept))


def read_secret(stack_dir: Path, name: str) -> str:
    path = stack_dir / SECRETS_DIR / name
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as e:
        raise MailstackError(
            f"secret {name} cannot be read ({e.strerror})",
            hint="run `mailstack render` to create missing secrets",
        ) from None


def new_private_key_pem() -> bytes:
    """A fresh EC private key as unencrypted PKCS#8 PEM (OpenSSL's "pkey" format)."""
    key = ec.generate_private_key(KEY_PAIR_CURVE)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(private_pem: bytes) -> bytes:
    """The public half of a PEM private key, as SubjectPublicKeyInfo PEM."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ensure_key_pair(directory: Path, pair: KeyPairSecret) -> set[str]:
    """Make the pair, or the public half of a kept private key; return the names written.

    A private key is never generated next to an existing public key: that would silently
    leave everything encrypted to the old pair unreadable.
    """
    private_path = directory / pair.private_name
    public_path = directory / pair.public_name
    if not private_path.exists():
        if public_path.exists():
            raise MailstackError(
                f"secret {pair.private_name} is missing but {pair.public_name} exists: "
                "data encrypted to this key pair cannot be read without it",
                hint=f"restore secrets/{pair.private_name} from a backup; only if that data "
                f"is lost anyway, delete secrets/{pair.public_name} to make a new pair",
            )
        _write_new_secret(private_path, new_private_key_pem())
        _write_new_secret(public_path, public_key_pem(private_path.read_bytes()))
        return {pair.private_name, pair.public_name}
    private_path.chmod(0o600)
    private_pem = private_path.read_bytes()
    try:
        derived = public_key_pem(private_pem)
    except (ValueError, TypeError) as e:
        raise MailstackError(
            f"secret {pair.private_name} is not a PEM private key ({e})",
            hint=f"restore secrets/{pair.private_name} from a backup",
        ) from None
    if not public_path.exists():
        _write_new_secret(public_path, derived)
        return {pair.public_name}
    public_path.chmod(0o600)
    if not _same_public_key(public_path.read_bytes(), derived):
        raise MailstackError(
            f"secrets {pair.private_name} and {pair.public_name} are not one key pair",
            hint=f"restore both from the same backup, or delete secrets/{pair.public_name} "
            "to derive it again from the private key",
        )
    return set()


def _same_public_key(pem: bytes, expected_pem: bytes) -> bool:
    # Compared as keys, not bytes: a public key restored from elsewhere may be laid out apart.
    try:
        found = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return False
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    expected = serialization.load_pem_public_key(expected_pem)
    return found.public_bytes(der, spki) == expected.public_bytes(der, spki)


def _write_new_secret(path: Path, data: bytes) -> None:
    # O_EXCL: never clobber; mode set at creation so the value is never world-readable.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def ensure_backup_password(stack_dir: Path) -> bool:
    """Make the backup repository password if it is missing; True when it was made now."""
    report = ensure_secrets(stack_dir, tokens=BACKUP_SECRETS, key_pairs=())
    return BACKUP_PASSWORD in report.created


# The relay host's password (relay.username): the operator's, never generated. Postfix's
# SMTP client gets it as a Compose secret only when relay.username is set.
RELAY_PASSWORD = "relay_password"  # noqa: S105  # a file name, not a password
MAX_RELAY_PASSWORD = 512


def check_relay_password(password: str) -> str:
    """The password as Postfix's SASL table can hold it: printable, one line, bounded."""
    if not password:
        raise MailstackError("the relay password is empty")
    if len(password) > MAX_RELAY_PASSWORD:
        raise MailstackError(
            f"the relay password is too long ({len(password)} characters; at most "
            f"{MAX_RELAY_PASSWORD})"
        )
    if not password.isprintable():
        raise MailstackError(
            "the relay password holds a control character or line break; allowed: printable "
            "characters, spaces included"
        )
    return password


def relay_password_name(domain: str | None = None) -> str:
    """The secret of relay.host's user (relay_password) or of a by_sender_domain entry's
    (relay_password.<domain>: a domain name is a valid Compose secret name as it stands)."""
    return RELAY_PASSWORD if domain is None else f"{RELAY_PASSWORD}.{domain}"


def write_relay_password(stack_dir: Path, password: str, domain: str | None = None) -> Path:
    """Store (or replace) secrets/relay_password (or relay_password.<domain>), 0600, through
    a new file renamed over."""
    name = relay_password_name(domain)
    directory = stack_dir / SECRETS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    staged = directory / f".{name}.new"
    staged.unlink(missing_ok=True)
    _write_new_secret(staged, check_relay_password(password).encode("utf-8"))
    staged.replace(path)
    return path


def relay_password_present(stack_dir: Path, domain: str | None = None) -> bool:
    path = stack_dir / SECRETS_DIR / relay_password_name(domain)
    return path.is_file() and path.stat().st_size > 0
