"""The admin service's database connections, one set for the API (adminapi.py), the web
pages (adminweb.py, webcommon.py) and the webmail's second factor (internal.py): a few kept
open to db as mailstack_admin (mailstack.adapters.pgconnection), no psql process per query."""

from mailstack.adapters.pgconnection import PgConnection

EXECUTOR = PgConnection()
