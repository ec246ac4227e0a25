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
GRANT CONNECT ON DATABASE mail TO postfix, dovecot;

\connect mail
-- Lookup roles read the views the migrations grant them, and nothing else.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO postfix, dovecot;
