-- Run by the db entrypoint at every start (psql as the superuser, SQL on stdin).
-- Creates what the schema migrations expect and sets every password from the Compose
-- secrets. Values only ever travel as psql variables (:'name'), never spliced into SQL.
\set admin_password `cat /run/secrets/db_admin_password`
\set postfix_password `cat /run/secrets/db_postfix_password`
\set dovecot_password `cat /run/secrets/db_dovecot_password`

SELECT 'CREATE ROLE postfix' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postfix')
\gexec
SELECT 'CREATE ROLE dovecot' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dovecot')
\gexec
-- The admin service's role always exists (migration 0004 grants to it); it can log in only
-- while the admin service is on (its secret is handed to this container only then).
SELECT 'CREATE ROLE mailstack_admin' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailstack_admin')
\gexec

ALTER ROLE postgres PASSWORD :'admin_password';
ALTER ROLE postfix WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 30 PASSWORD :'postfix_password';
ALTER ROLE dovecot WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 30 PASSWORD :'dovecot_password';
\unset admin_password
\unset postfix_password
\unset dovecot_password

SELECT 'CREATE DATABASE mail OWNER postgres ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mail')
\gexec

REVOKE ALL ON DATABASE mail FROM PUBLIC;
GRANT CONNECT ON DATABASE mail TO postfix, dovecot, mailstack_admin;

-- The admin service (features.admin): never a superuser, only migration 0004's grants.
\set admin_api `test -r /run/secrets/db_admin_api_password && echo on || echo off`
\if :admin_api
\set admin_api_password `cat /run/secrets/db_admin_api_password`
ALTER ROLE mailstack_admin WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 12 PASSWORD :'admin_api_password';
\unset admin_api_password
\else
ALTER ROLE mailstack_admin NOLOGIN;
\endif

-- The webmail (features.webmail): Roundcube's own role and database, which it owns and
-- where it keeps its schema. The secret is handed to this container only while the webmail
-- is on; when it is off, the role stays (its data too) but cannot log in.
\set webmail `test -r /run/secrets/db_roundcube_password && echo on || echo off`
\if :webmail
\set roundcube_password `cat /run/secrets/db_roundcube_password`
SELECT 'CREATE ROLE roundcube' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'roundcube')
\gexec
ALTER ROLE roundcube WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 12 PASSWORD :'roundcube_password';
\unset roundcube_password
SELECT 'CREATE DATABASE roundcube OWNER roundcube ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'roundcube')
\gexec
REVOKE ALL ON DATABASE roundcube FROM PUBLIC;
\else
SELECT 'ALTER ROLE roundcube NOLOGIN' WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = 'roundcube')
\gexec
\endif

-- The metrics service (monitoring.metrics): pg_monitor's statistics, no table of any
-- database; pg_hba.conf admits it to `postgres` only, from the metrics service's address.
\set metrics `test -r /run/secrets/db_metrics_password && echo on || echo off`
\if :metrics
\set metrics_password `cat /run/secrets/db_metrics_password`
SELECT 'CREATE ROLE mailstack_metrics' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailstack_metrics')
\gexec
ALTER ROLE mailstack_metrics WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 3 PASSWORD :'metrics_password';
\unset metrics_password
GRANT pg_monitor TO mailstack_metrics;
\else
SELECT 'ALTER ROLE mailstack_metrics NOLOGIN' WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailstack_metrics')
\gexec
\endif

\connect mail
-- Lookup roles read the views the migrations grant them, and nothing else.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO postfix, dovecot, mailstack_admin;
