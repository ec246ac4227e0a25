-- 0003: who may manage the stack besides the host's root, how they prove it, and what they
-- did. Administrators and domain administrators are accounts of their own (not mailboxes);
-- users are the mailboxes themselves. Applied by mailstack (migrations.migrate) in one
-- transaction.

-- Administrators: role 'admin' manages everything, 'domain_admin' only the domains listed
-- in admin_domains. The password is an Argon2id hash like a mailbox's.
CREATE TABLE admins (
    name        text        PRIMARY KEY
                            CHECK (name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    role        text        NOT NULL CHECK (role IN ('admin', 'domain_admin')),
    password    text        NOT NULL CHECK (password LIKE '{%}%'),
    active      boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE admin_domains (
    admin       text        NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
    domain      text        NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    PRIMARY KEY (admin, domain)
);
CREATE INDEX admin_domains_domain ON admin_domains (domain);

-- A second factor: one TOTP secret (RFC 6238) per account, an administrator's or a
-- mailbox's; deleting the account deletes it. The secret is stored sealed (AES-GCM under a
-- key in the stack's secrets/, so a database dump alone does not yield it); confirmed is set
-- once a first code verified. last_step is the last time step accepted: a code is never
-- accepted twice.
CREATE TABLE mfa_totp (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    admin       text        UNIQUE REFERENCES admins (name) ON DELETE CASCADE,
    mailbox     text        UNIQUE REFERENCES mailboxes (address) ON DELETE CASCADE,
    sealed      text        NOT NULL CHECK (length(sealed) <= 400),
    confirmed   timestamptz,
    last_step   bigint      NOT NULL DEFAULT 0,
    created     timestamptz NOT NULL DEFAULT now(),
    CHECK ((admin IS NULL) <> (mailbox IS NULL))
);

-- Recovery codes of an enrolment: shown once, stored as SHA-256 of the (generated, 80-bit)
-- code; a used one is deleted, and a new enrolment replaces them all.
CREATE TABLE mfa_recovery_codes (
    totp        bigint      NOT NULL REFERENCES mfa_totp (id) ON DELETE CASCADE,
    code_hash   text        NOT NULL CHECK (code_hash ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (totp, code_hash)
);

-- API tokens: the token (generated, 256-bit) is shown once; only its SHA-256 is kept. The
-- scopes are a subset of read, accounts, domains, admin. A token acts for the administrator
-- that created it (NULL: root on the host, `mailstack api token create`).
CREATE TABLE api_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    token_hash  text        NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    scopes      text[]      NOT NULL
                            CHECK (scopes <@ ARRAY['read', 'accounts', 'domains', 'admin']
                                   AND cardinality(scopes) > 0),
    created_by  text        REFERENCES admins (name) ON DELETE CASCADE,
    created     timestamptz NOT NULL DEFAULT now(),
    expires     timestamptz,
    revoked     timestamptz,
    last_used   timestamptz
);

-- The audit log: every change, by whom (cli:root, admin:NAME, token:NAME, mailbox:ADDRESS),
-- from where (the host, or a client address), what (an action such as mailbox.add) and on
-- what. Rows are only ever added; the dump of every backup keeps them.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 400),
    source      text        NOT NULL CHECK (length(source) BETWEEN 1 AND 100),
    action      text        NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    target      text        NOT NULL DEFAULT '' CHECK (length(target) <= 400),
    detail      text        NOT NULL DEFAULT '' CHECK (length(detail) <= 2000)
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Every change to the directory and to the tables above is recorded by the database itself:
-- an AFTER row trigger on each table writes audit_log in the changing transaction, whoever
-- changes it (the CLI, `accounts import`, the admin service, psql by hand), so no writer
-- can forget. Who and from where are the settings mailstack.actor and mailstack.source of
-- the session or transaction (mailstack.adapters.psql sets them for every psql it starts; a
-- writer that reuses connections sets them per transaction, set_config(name, value, true));
-- without them the database user is recorded ('db:postgres' from 'database'). The action is
-- table.verb (mailbox.add, mailbox.password, token.revoke, ...), the target the row's key;
-- the detail never holds a secret: of a password, a token's hash or a sealed TOTP secret
-- only the fact that it changed is recorded.

-- One audit row, attributed to the session's actor.
CREATE FUNCTION mailstack_audit_write(entry_action text, entry_target text, entry_detail text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO audit_log (actor, source, action, target, detail) VALUES (
        left(coalesce(nullif(current_setting('mailstack.actor', true), ''),
                      'db:' || session_user), 400),
        left(coalesce(nullif(current_setting('mailstack.source', true), ''), 'database'), 100),
        entry_action,
        left(coalesce(entry_target, ''), 400),
        left(coalesce(entry_detail, ''), 2000));
END;
$$;

REVOKE EXECUTE ON FUNCTION mailstack_audit_write(text, text, text) FROM PUBLIC;

-- A column's value for a detail: an array as a,b; NULL as none.
CREATE FUNCTION mailstack_audit_value(item jsonb) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public AS $$
    SELECT CASE
        WHEN item IS NULL OR item = 'null'::jsonb THEN 'none'
        WHEN jsonb_typeof(item) = 'array'
            THEN (SELECT coalesce(string_agg(element, ','), '')
                  FROM jsonb_array_elements_text(item) AS element)
        ELSE item #>> '{}'
    END;
$$;

-- SECURITY DEFINER: the trigger writes as the schema's owner, so a role that may change the
-- directory (the admin service's) needs no right on audit_log and cannot write an entry of
-- its own making; session_user still names who is connected.
CREATE FUNCTION mailstack_audit_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END;
    row_now jsonb := coalesce(new_row, old_row);
    kind text;
    target text;
    summary text;  -- what the row is, for .add and .remove
    changed_column text;
    verb text;
    note text;
    verbs text[] := '{}';
    notes text[] := '{}';
    slot integer;
BEGIN
    CASE TG_TABLE_NAME
    WHEN 'domains' THEN
        kind := 'domain';
        target := row_now ->> 'name';
        summary := CASE WHEN (row_now ->> 'active')::boolean THEN '' ELSE 'inactive' END;
    WHEN 'mailboxes' THEN
        kind := 'mailbox';
        target := row_now ->> 'address';
        summary := 'quota ' || (row_now ->> 'quota_bytes')
            || CASE WHEN (row_now ->> 'active')::boolean THEN '' ELSE ', inactive' END;
    WHEN 'aliases' THEN
        kind := 'alias';
        target := (row_now ->> 'source') || ' -> ' || (row_now ->> 'destination');
        summary := CASE WHEN (row_now ->> 'active')::boolean THEN '' ELSE 'inactive' END;
    WHEN 'alias_domains' THEN
        kind := 'alias_domain';
        target := row_now ->> 'name';
        summary := 'of ' || (row_now ->> 'target');
    WHEN 'app_passwords' THEN
        kind := 'app_password';
        target := row_now ->> 'address';
        summary := 'name ' || (row_now ->> 'name');
    WHEN 'sender_permissions' THEN
        kind := 'sender';
        target := row_now ->> 'login';
        summary := 'may send as ' || (row_now ->> 'sender');
    WHEN 'admins' THEN
        kind := 'admin';
        target := row_now ->> 'name';
        summary := 'role ' || (row_now ->> 'role')
            || CASE WHEN (row_now ->> 'active')::boolean THEN '' ELSE ', inactive' END;
    WHEN 'admin_domains' THEN
        kind := 'admin_domain';
        target := row_now ->> 'admin';
        summary := 'domain ' || (row_now ->> 'domain');
    WHEN 'api_tokens' THEN
        kind := 'token';
        target := row_now ->> 'name';
        summary := 'scopes ' || mailstack_audit_value(row_now -> 'scopes')
            || ', expires ' || mailstack_audit_value(row_now -> 'expires')
            || coalesce(', created by admin:' || (row_now ->> 'created_by'), '');
    WHEN 'mfa_totp' THEN
        kind := 'mfa';
        target := coalesce('admin:' || (row_now ->> 'admin'),
                           'mailbox:' || (row_now ->> 'mailbox'));
        summary := CASE WHEN row_now ->> 'confirmed' IS NULL THEN 'unconfirmed' ELSE 'confirmed' END;
    END CASE;

    IF TG_OP = 'INSERT' THEN
        PERFORM mailstack_audit_write(
            kind || CASE kind WHEN 'token' THEN '.create' WHEN 'mfa' THEN '.enrol' ELSE '.add' END,
            target, summary);
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM mailstack_audit_write(kind || '.remove', target, summary);
        RETURN NULL;
    END IF;

    -- An update: one entry per thing that changed. Bookkeeping is not a change: a row's
    -- creation time, and what a sign-in updates (the last TOTP step, a token's last use).
    FOR changed_column IN
        SELECT key FROM jsonb_each(new_row)
        WHERE value IS DISTINCT FROM old_row -> key
            AND key <> 'created'
            AND NOT (TG_TABLE_NAME = 'mfa_totp' AND key = 'last_step')
            AND NOT (TG_TABLE_NAME = 'api_tokens' AND key = 'last_used')
        ORDER BY key
    LOOP
        note := '';
        CASE
        WHEN changed_column IN ('password', 'lookup_key') THEN
            verb := 'password';
        WHEN changed_column = 'token_hash' THEN
            verb := 'rotate';
        WHEN changed_column = 'sealed' THEN
            verb := 'enrol';  -- enrolled again
            note := 'new secret';
        WHEN changed_column = 'active' THEN
            verb := CASE WHEN (new_row ->> 'active')::boolean THEN 'enable' ELSE 'disable' END;
        WHEN changed_column = 'revoked' THEN
            verb := CASE WHEN new_row ->> 'revoked' IS NULL THEN 'unrevoke' ELSE 'revoke' END;
        WHEN changed_column = 'confirmed' THEN
            verb := CASE WHEN new_row ->> 'confirmed' IS NULL THEN 'unconfirm' ELSE 'confirm' END;
        WHEN changed_column IN ('quota_bytes', 'role', 'expires', 'scopes') THEN
            verb := CASE changed_column WHEN 'quota_bytes' THEN 'quota'
                                        WHEN 'expires' THEN 'expiry'
                                        ELSE changed_column END;
            note := mailstack_audit_value(old_row -> changed_column) || ' -> '
                || mailstack_audit_value(new_row -> changed_column);
        ELSE
            -- A key or another plain column (a rename, a new target): say which and how.
            verb := 'change';
            note := changed_column || ' ' || mailstack_audit_value(old_row -> changed_column)
                || ' -> ' || mailstack_audit_value(new_row -> changed_column);
        END CASE;
        slot := array_position(verbs, verb);
        IF slot IS NULL THEN
            verbs := verbs || verb;
            notes := notes || note;
        ELSIF note <> '' THEN
            notes[slot] := concat_ws('; ', nullif(notes[slot], ''), note);
        END IF;
    END LOOP;
    FOR slot IN 1 .. coalesce(array_length(verbs, 1), 0) LOOP
        PERFORM mailstack_audit_write(kind || '.' || verbs[slot], target, notes[slot]);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER domains_audit AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER mailboxes_audit AFTER INSERT OR UPDATE OR DELETE ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER aliases_audit AFTER INSERT OR UPDATE OR DELETE ON aliases
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER alias_domains_audit AFTER INSERT OR UPDATE OR DELETE ON alias_domains
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER app_passwords_audit AFTER INSERT OR UPDATE OR DELETE ON app_passwords
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER sender_permissions_audit AFTER INSERT OR UPDATE OR DELETE ON sender_permissions
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER admins_audit AFTER INSERT OR UPDATE OR DELETE ON admins
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER admin_domains_audit AFTER INSERT OR UPDATE OR DELETE ON admin_domains
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER api_tokens_audit AFTER INSERT OR UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
CREATE TRIGGER mfa_totp_audit AFTER INSERT OR UPDATE OR DELETE ON mfa_totp
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_change();
