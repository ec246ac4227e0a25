"""Secrets: generated once with a CSPRNG, one file each (0600) in secrets/ (0700)."""

from __future__ import annotations

import os
import secrets as csprng
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import MailstackError

SECRETS_DIR = "secrets"

# name -> what it protects. Each is handed to containers as a Compose file secret
# (/run/secrets/<name>), never as an environment variable.
SECRET_NAMES: dict[str, str] = {
    "db_admin_password": "PostgreSQL superuser (schema migrations, backups)",
    "db_postfix_password": "PostgreSQL role postfix (read-only lookups)",
    "db_dovecot_password": "PostgreSQL role dovecot (read-only lookups)",
    "redis_password": "Redis (rspamd's statistics and rate limits)",
    "rspamd_controller_password": "rspamd controller (web UI and learning)",
}

TOKEN_BYTES = 32  # 256 bits


@dataclass(frozen=True)
class SecretsReport:
    created: tuple[str, ...]
    kept: tuple[str, ...]


def ensure_secrets(stack_dir: Path, names: dict[str, str] = SECRET_NAMES) -> SecretsReport:
    """Create every missing secret; never change one that exists. Fix loose permissions."""
    directory = stack_dir / SECRETS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
    created: list[str] = []
    kept: list[str] = []
    for name in sorted(names):
        path = directory / name
        if path.exists():
            path.chmod(0o600)
            kept.append(name)
            continue
        _write_new_secret(path, csprng.token_urlsafe(TOKEN_BYTES))
        created.append(name)
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


def _write_new_secret(path: Path, value: str) -> None:
    # O_EXCL: never clobber; mode set at creation so the value is never world-readable.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
