"""The admin service's Executor: psql runs in its own container and reaches `db` over the
back-end network as the role mailstack_admin (password from PGPASSFILE, written by the
service's entrypoint from its Compose secret), instead of `docker compose exec db`."""

from __future__ import annotations

from mailstack.adapters import process, psql
from mailstack.errors import MailstackError

ADMIN_ROLE = "mailstack_admin"


class LocalPsql:
    """Runs only psql, only for the db service: anything else the core would run in another
    container (doveadm for mailbox usage) is not available to the admin service."""

    psql_connection = psql.Connection(psql.DB_SERVICE, ADMIN_ROLE)

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,  # the container user of Compose exec: not ours to choose
        timeout: float = 60,
    ) -> bytes:
        if service != psql.DB_SERVICE or not argv or argv[0] != "psql":
            raise MailstackError(
                f"the admin service cannot run {argv[0] if argv else 'nothing'} in {service}"
            )
        return process.run(argv, input=input, timeout=timeout, what="psql").stdout
