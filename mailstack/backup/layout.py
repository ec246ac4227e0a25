"""What a backup snapshot holds, where, and how it is tagged: the layout every job shares.

A snapshot holds, under /backup:

    stack/              the stack directory: mailstack.yaml, secrets/ (mail_crypt keys too),
                        tls/, dkim/, overrides/, the rendered tree and .mailstack/
    volumes/mail        Dovecot's /var/mail (maildirs, indexes, sieve)
    volumes/redis       rspamd's learned data (Bayes, history, reputation)
    volumes/rspamd      rspamd's own state
    volumes/dav         calendars and address books (features.dav), restored with the mail
    dump/db.pgdump      pg_dump -Fc of the mail directory (one transaction: consistent)
    dump/webmail.pgdump pg_dump -Fc of Roundcube's database, when webmail is on
    dump/manifest.json  versions, images, per-mailbox counts, DB row counts, file digests
    dump/mail-inventory.tsv  messages and bytes per mailbox, taken inside the pause
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the layout needs Config only as a type
    from mailstack.stack.config import Config

SNAPSHOT_ROOT = "/backup"
STACK_PATH = f"{SNAPSHOT_ROOT}/stack"
VOLUMES_PATH = f"{SNAPSHOT_ROOT}/volumes"
DUMP_PATH = f"{SNAPSHOT_ROOT}/dump"
# Named volumes in a snapshot; the db volume is not: its content travels as the dump.
VOLUMES = ("mail", "redis", "rspamd")
# Volumes of optional services, in a snapshot when the service runs.
OPTIONAL_VOLUMES: dict[str, Callable[[Config], bool]] = {"dav": lambda config: config.features.dav}
# Users' own data: restored with the mail (`backup restore --only mail`).
WITH_MAIL = ("mail", "dav")


def volumes_of(config: Config) -> tuple[str, ...]:
    """The named volumes a snapshot of this stack holds."""
    return (*VOLUMES, *(name for name, runs in OPTIONAL_VOLUMES.items() if runs(config)))


DB_DUMP = "db.pgdump"
# Roundcube's own database (contacts, identities, settings), when the stack has one.
WEBMAIL_DUMP = "webmail.pgdump"
MANIFEST = "manifest.json"
INVENTORY = "mail-inventory.tsv"
TAG = "mailstack"  # every snapshot mailstack makes
WARM_TAG = "warm-pass"  # the first pass of a backup, forgotten once the final one is taken
SAFETY_TAG = "safety"  # the state a restore replaced
