-- 0008: passkeys (WebAuthn credentials) as a second factor beside TOTP, for administrators
-- and, later, mailbox users (issue 16). Applied by mailstack (migrations.migrate) in one
-- transaction.

-- One row per registered authenticator. Only public data is stored: the credential's id and
-- its attested credential data (AAGUID, id and COSE public key), base64url; a dump yields
-- nothing that signs in. sign_count is the authenticator's signature counter: a counter that
-- goes backwards means a cloned authenticator (mailstack.identity.passkeys refuses it).
CREATE TABLE passkeys (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    admin         text        REFERENCES admins (name) ON DELETE CASCADE,
    mailbox       text        REFERENCES mailboxes (address) ON DELETE CASCADE,
    name          text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    -- base64url; lengths apart, as PostgreSQL's regular expressions repeat at most 255 times
    credential_id text        NOT NULL UNIQUE CHECK (credential_id ~ '^[A-Za-z0-9_-]+$'
                                                     AND length(credential_id) BETWEEN 16 AND 1400),
    credential    text        NOT NULL CHECK (credential ~ '^[A-Za-z0-9_-]+$'
                                              AND length(credential) BETWEEN 40 AND 4000),
    sign_count    bigint      NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    created       timestamptz NOT NULL DEFAULT now(),
    last_used     timestamptz,
    CHECK ((admin IS NULL) <> (mailbox IS NULL)),
    UNIQUE (admin, name),
    UNIQUE (mailbox, name)
);

-- Audited like the tables of 0003, by a trigger of its own: 0003's function knows its own
-- tables only, and an applied migration is never edited. A sign-in (sign_count, last_used)
-- is bookkeeping, not a change.
CREATE FUNCTION mailstack_audit_passkey() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    row_now passkeys := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    target text := coalesce('admin:' || row_now.admin, 'mailbox:' || row_now.mailbox);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM mailstack_audit_write('passkey.add', target, 'name ' || row_now.name);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM mailstack_audit_write('passkey.remove', target, 'name ' || row_now.name);
    ELSIF NEW.name IS DISTINCT FROM OLD.name THEN
        PERFORM mailstack_audit_write('passkey.change', target,
                                      'name ' || OLD.name || ' -> ' || NEW.name);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER passkeys_audit AFTER INSERT OR UPDATE OR DELETE ON passkeys
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_passkey();

REVOKE ALL ON passkeys FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON passkeys TO mailstack_admin;
GRANT UPDATE (sign_count, last_used) ON passkeys TO mailstack_admin;

-- A passkey ceremony in progress (identity.passkeys: its challenge and options), kept with
-- the web session that began it and taken (set back to NULL) by the step that finishes it,
-- so a challenge is answered once. The role's table-wide UPDATE on web_sessions (0005)
-- covers the column.
ALTER TABLE web_sessions ADD COLUMN passkey_state text CHECK (length(passkey_state) <= 2000);
