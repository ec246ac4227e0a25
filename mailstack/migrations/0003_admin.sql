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
