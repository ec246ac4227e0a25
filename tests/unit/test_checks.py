"""`check config`: the place a checker names, as a file and line of the stack directory.

Every sample is the real output of an image's check-config, captured from `mailstack check
config SERVICE` after one bogus line was appended to (or edited into) the named file.
"""

from __future__ import annotations

import pytest

from mailstack.runtime.checks import locate

POSTGRES_SYNTAX = """\
2026-11-23 18:50:31.141 GMT [9] LOG:  syntax error in file "/etc/mailstack/db/postgresql.conf" line 31, near token "is"
2026-11-23 18:50:31.141 GMT [9] FATAL:  configuration file "/etc/mailstack/db/postgresql.conf" contains errors
"""

# PostgreSQL names no line for a bad value: check-config adds the line that sets it.
POSTGRES_VALUE = """\
2026-11-23 18:51:23.878 GMT [9] LOG:  skipping missing configuration file "/var/lib/postgresql/15/data/postgresql.auto.conf"
2026-11-23 18:51:23.879 UTC [9] LOG:  invalid value for parameter "max_connections": "lots"
file "/etc/mailstack/db/postgresql.conf" line 31 sets max_connections
2026-11-23 18:51:23.879 UTC [9] FATAL:  configuration file "/etc/mailstack/db/postgresql.conf" contains errors
"""

PG_HBA = """\
pg_ctl: could not start server
Examine the log output.
2026-11-23 18:51:16.760 UTC [27] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14+deb12u1) 12.2.0, 64-bit
2026-11-23 18:51:16.760 UTC [27] LOG:  listening on Unix socket "/tmp/db-check.VtGlvN/.s.PGSQL.5432"
2026-11-23 18:51:16.761 UTC [27] LOG:  invalid connection type "this"
2026-11-23 18:51:16.761 UTC [27] CONTEXT:  line 13 of configuration file "/etc/mailstack/db/pg_hba.conf"
2026-11-23 18:51:16.761 UTC [27] FATAL:  could not load pg_hba.conf
2026-11-23 18:51:16.762 UTC [27] LOG:  database system is shut down
"""

PG_IDENT = """\
2026-11-23 18:51:40.977 UTC [26] LOG:  listening on Unix socket "/tmp/db-check.oltjru/.s.PGSQL.5432"
2026-11-23 18:51:40.977 UTC [26] LOG:  missing entry in file "/etc/mailstack/db/pg_ident.conf" at end of line 7
2026-11-23 18:51:40.985 UTC [26] LOG:  database system is ready to accept connections
"""

REDIS = """\
16:C 23 Nov 2026 18:43:34.229 # Reading config from stdin

*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***
Reading the configuration file, at line 42
>>> 'this is not a redis directive'
Bad directive or wrong number of arguments
redis: /etc/mailstack/redis/redis.conf:42: >>> 'this is not a redis directive' Bad directive or wrong number of arguments
"""

REDIS_OVERRIDE = """\
*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***
Reading the configuration file, at line 44
>>> 'maxmemory lots'
argument must be a memory value
redis: /etc/mailstack/overrides/redis.conf:2: >>> 'maxmemory lots' argument must be a memory value
"""

UNBOUND = """\
/etc/mailstack/resolver/unbound.conf:72: error: unknown keyword 'this-is-bogus'
/etc/mailstack/resolver/unbound.conf:72: error: stray ':'
/etc/mailstack/resolver/unbound.conf:72: error: unknown keyword 'yes'
read /etc/mailstack/resolver/unbound.conf failed: 3 errors in configuration file
"""

CLAMD = """\
ERROR: Parse error at /etc/mailstack/clamav/clamd.conf:40: Unknown option BogusOption
ERROR: Can't open/parse the config file /etc/mailstack/clamav/clamd.conf
"""

RSPAMD_UCL = """\
failed to load config: ucl parser error: error while parsing /etc/rspamd/local.d/redis.conf: line: 10, column: 10 - 'string value must not be empty', character: ';'
syntax BAD
rspamd: the configuration has errors (see above); not starting
"""

# UCL reports an unclosed brace at the end of the file; the brace itself is at line 14.
RSPAMD_BRACE = """\
failed to load config: ucl parser error: /etc/rspamd/local.d/options.inc:15 unmatched open brace at 14; \nsyntax BAD
rspamd: the configuration has errors (see above); not starting
"""

DOVECOT = """\
doveconf: Fatal: Error in configuration file /etc/mailstack/dovecot/dovecot.conf line 181: Unknown setting: bogus_setting
doveconf: Error: managesieve-login: dump-capability process returned 89
doveconf: Fatal: Error in configuration file /etc/mailstack/dovecot/dovecot.conf line 181: Unknown setting: bogus_setting
"""

DOVECOT_OVERRIDE = """\
doveconf: Fatal: Error in configuration file /etc/mailstack/overrides/x.conf line 2: Invalid number x: Not a valid number
doveconf: Error: managesieve-login: dump-capability process returned 89
"""

POSTFIX_MAIN = """\
postconf: fatal: /etc/postfix/main.cf, line 118: missing '=' after attribute name: "this line is not a postfix setting"
"""

# postconf names no line for an unknown parameter: check-config adds it.
POSTFIX_UNUSED = """\
postconf: warning: /etc/postfix/main.cf, line 118: unused parameter: smtpd_bogus_thing=yes
"""

POSTFIX_MASTER = """\
postconf: fatal: file /etc/postfix/master.cf: line 64: bad field count
Nov 23 18:41:22 mail postfix/postfix-script[37]: fatal: cannot execute /usr/sbin/postconf!
"""

# Past the generated lines, check-config names the appended override by its own line.
POSTFIX_OVERRIDE = """\
mailstack-postfix: appending overrides/postfix/main.cf
mailstack-postfix: appending overrides/postfix/master.cf
postconf: fatal: file /etc/mailstack/overrides/master.cf: line 2: bad field count
Nov 23 18:42:15 over postfix/postfix-script[48]: fatal: cannot execute /usr/sbin/postconf!
"""

SINK_MASTER = """\
postconf: fatal: file /etc/postfix/master.cf: line 24: bad field count
Nov 23 18:50:57 sink postfix/postfix-script[15]: fatal: cannot execute /usr/sbin/postconf!
"""

# The log's date ("2026/11/23") comes first and is no path.
NGINX = """\
2026/11/23 18:43:48 [emerg] 1#1: unknown directive "bogus_directive" in /etc/mailstack/front/nginx.conf:76
nginx: configuration file /etc/mailstack/front/nginx.conf test failed
"""

NGINX_OVERRIDE = """\
2026/11/23 18:43:49 [emerg] 1#1: unknown directive "nonsense" in /etc/mailstack/overrides/x.conf:3
nginx: configuration file /etc/mailstack/front/nginx.conf test failed
"""

# `docker compose run` speaks first on the same stream.
COMPOSE_NOISE = " Volume devcheck_db  Creating\n Volume devcheck_db  Created\n"


@pytest.mark.parametrize(
    ("service", "output", "location"),
    [
        pytest.param("db", POSTGRES_SYNTAX, "config/db/postgresql.conf:31", id="postgres-syntax"),
        pytest.param("db", POSTGRES_VALUE, "config/db/postgresql.conf:31", id="postgres-value"),
        pytest.param("db", PG_HBA, "config/db/pg_hba.conf:13", id="pg-hba"),
        pytest.param("db", PG_IDENT, "config/db/pg_ident.conf:7", id="pg-ident"),
        pytest.param("redis", REDIS, "config/redis/redis.conf:42", id="redis"),
        pytest.param("redis", REDIS_OVERRIDE, "overrides/redis/redis.conf:2", id="redis-override"),
        pytest.param("resolver", UNBOUND, "config/resolver/unbound.conf:72", id="unbound"),
        pytest.param("clamav", CLAMD, "config/clamav/clamd.conf:40", id="clamd"),
        pytest.param("rspamd", RSPAMD_UCL, "config/rspamd/redis.conf:10", id="rspamd-ucl"),
        pytest.param("rspamd", RSPAMD_BRACE, "config/rspamd/options.inc:14", id="rspamd-brace"),
        pytest.param("dovecot", DOVECOT, "config/dovecot/dovecot.conf:181", id="dovecot"),
        pytest.param(
            "dovecot", DOVECOT_OVERRIDE, "overrides/dovecot/x.conf:2", id="dovecot-override"
        ),
        pytest.param("postfix", POSTFIX_MAIN, "config/postfix/main.cf:118", id="postfix-main"),
        pytest.param("postfix", POSTFIX_UNUSED, "config/postfix/main.cf:118", id="postfix-unused"),
        pytest.param("postfix", POSTFIX_MASTER, "config/postfix/master.cf:64", id="postfix-master"),
        pytest.param(
            "postfix", POSTFIX_OVERRIDE, "overrides/postfix/master.cf:2", id="postfix-override"
        ),
        pytest.param("sink", SINK_MASTER, "config/sink/master.cf:24", id="sink-master"),
        pytest.param("front", NGINX, "config/front/nginx.conf:76", id="nginx"),
        pytest.param("front", NGINX_OVERRIDE, "overrides/front/x.conf:3", id="nginx-override"),
    ],
)
def test_checker_error_is_located_in_the_stack_directory(
    service: str, output: str, location: str
) -> None:
    assert locate(service, COMPOSE_NOISE + output) == location


def test_rspamd_override_file_is_located_among_the_overrides() -> None:
    output = "ucl parser error: /etc/rspamd/override.d/actions.conf:3 unexpected end of file\n"
    assert locate("rspamd", output) == "overrides/rspamd/actions.conf:3"


def test_the_first_place_named_wins() -> None:
    output = (
        "/etc/mailstack/resolver/unbound.conf:12: error: first\n"
        "/etc/mailstack/overrides/later.conf:3: error: second\n"
    )
    assert locate("resolver", output) == "config/resolver/unbound.conf:12"


def test_a_file_of_the_image_keeps_its_container_path() -> None:
    output = (
        "ucl parser error: /etc/rspamd/modules.d/antivirus.conf:58 object closed with } "
        "is not opened with { at line 2\n"
    )
    assert locate("rspamd", output) == "/etc/rspamd/modules.d/antivirus.conf:58"


@pytest.mark.parametrize(
    "output",
    [
        "rcl parse error: cannot convert string to integer in option count\nsyntax BAD\n",
        'Error response from daemon: failed to create shim task: exec: "/usr/local/bin/'
        'check-config": stat /usr/local/bin/check-config: no such file or directory\n',
        "",
    ],
)
def test_no_location_when_the_checker_names_none(output: str) -> None:
    assert locate("rspamd", output) is None


def test_every_service_with_a_fixed_address_is_checked_inside_its_running_container() -> None:
    # `compose run` of such a service asks for the running one's address and fails.
    import yaml

    from mailstack.runtime.checks import FIXED_ADDRESS
    from mailstack.stack.config import validate_config
    from mailstack.stack.render import RenderInputs, render_stack
    from tests.conftest import REFERENCE

    files = render_stack(RenderInputs(validate_config(REFERENCE), "1"))
    services = yaml.safe_load(files["compose.yaml"])["services"]
    fixed = {
        name
        for name, service in services.items()
        for network in (service.get("networks") or {}).values()
        if isinstance(network, dict) and "ipv4_address" in network
    }
    assert fixed and fixed <= FIXED_ADDRESS
