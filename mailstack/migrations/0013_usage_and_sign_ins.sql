-- 0013: each mailbox's quota use and its recent sign-ins, written by Dovecot itself through
-- its dict (config/dovecot/dovecot-sql-dict.conf.ext: quota_clone and last_login, via the
-- dict proxy as the role dovecot), read by the admin service (issue 16: /account/, the
-- mailbox pages, the API). Applied by mailstack (migrations.migrate) in one transaction.
--
-- Dovecot 2.3.19's dict-sql writes a value as INSERT ... ON CONFLICT (key) DO UPDATE SET
-- value = ...: the grants below are exactly what that statement needs (INSERT of the
-- mapped columns, UPDATE of the values, SELECT of the key columns it names as the conflict
-- target), nothing to read a value or delete a row.

-- quota_clone: the usage Dovecot's quota counts (bytes, messages), per mailbox, after each
-- change (delivery, save, expunge), as of `updated`.
CREATE TABLE quota_usage (
    username    text        PRIMARY KEY REFERENCES mailboxes (address) ON DELETE CASCADE,
    bytes       bigint      CHECK (bytes >= 0),
    messages    bigint      CHECK (messages >= 0),
    updated     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION quota_usage_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.updated := now();
    RETURN NEW;
END $$;
CREATE TRIGGER quota_usage_updated BEFORE UPDATE ON quota_usage
    FOR EACH ROW EXECUTE FUNCTION quota_usage_updated();

-- last_login: one row per (mailbox, protocol, client address) with the latest sign-in, as
-- Unix seconds (Dovecot's value). service: imap or managesieve; remote: Dovecot's
-- %{rip}, which for the webmail is the browser's address (x-originating-ip, believed from
-- the webmail's address only).
CREATE TABLE sign_ins (
    username    text        NOT NULL REFERENCES mailboxes (address) ON DELETE CASCADE,
    service     text        NOT NULL CHECK (service ~ '^[a-z0-9-]{1,32}$'),
    remote      text        NOT NULL CHECK (length(remote) BETWEEN 1 AND 64),
    last_seen   bigint      NOT NULL CHECK (last_seen > 0),
    PRIMARY KEY (username, service, remote)
);

-- Bounded: each sign-in prunes its mailbox's rows older than 90 days and beyond its newest
-- 100 (a few rows by the primary key's index). SECURITY DEFINER: it deletes as the
-- schema's owner; the role dovecot has no DELETE.
CREATE FUNCTION sign_ins_prune() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM sign_ins s
        WHERE s.username = NEW.username
          AND (s.last_seen < extract(epoch FROM now() - interval '90 days')
               OR (s.service, s.remote) NOT IN (
                   SELECT n.service, n.remote FROM sign_ins n
                   WHERE n.username = NEW.username
                   ORDER BY n.last_seen DESC LIMIT 100));
    RETURN NULL;
END $$;
CREATE TRIGGER sign_ins_prune AFTER INSERT OR UPDATE ON sign_ins
    FOR EACH ROW EXECUTE FUNCTION sign_ins_prune();

REVOKE ALL ON quota_usage, sign_ins FROM PUBLIC;
REVOKE ALL ON FUNCTION quota_usage_updated(), sign_ins_prune() FROM PUBLIC;
-- Dovecot's dict: its upsert, column by column.
GRANT INSERT (username, bytes, messages), UPDATE (bytes, messages), SELECT (username)
    ON quota_usage TO dovecot;
GRANT INSERT (username, service, remote, last_seen), UPDATE (last_seen),
    SELECT (username, service, remote) ON sign_ins TO dovecot;
-- The admin service: the pages and the API read them (every read scoped by the principal
-- or the session's own mailbox in mailstack.accounts.usage).
GRANT SELECT ON quota_usage, sign_ins TO mailstack_admin;
