-- 0005: sessions of the admin service's web sign-in (mailstack.identity.sessions), and what
-- the sign-in needs of the role mailstack_admin: read an administrator's password hash, role
-- and domains (identity.principal), and enrol, confirm and check its second factor
-- (identity.mfa).

-- One row per signed-in browser. Only the SHA-256 of the session id (256 bits from the
-- CSPRNG, kept in the browser's cookie) is stored, so a dump yields no session. A session
-- belongs to an administrator or to a mailbox's user (self-service, later). stage: the
-- password was accepted and a code is due ('password'), or an enrolment is due ('enrol'),
-- or both factors passed ('full'); only a full session reaches a page. The idle and absolute
-- timeouts are enforced by the lookup's WHERE (identity/sessions.py names them).
CREATE TABLE web_sessions (
    id_hash     text        PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    admin       text        REFERENCES admins (name) ON DELETE CASCADE,
    mailbox     text        REFERENCES mailboxes (address) ON DELETE CASCADE,
    stage       text        NOT NULL CHECK (stage IN ('password', 'enrol', 'full')),
    source      text        NOT NULL CHECK (length(source) BETWEEN 1 AND 100),
    created     timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    -- when the password was last typed (sign-in or re-authentication before a sensitive
    -- action)
    reauth_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((admin IS NULL) <> (mailbox IS NULL))
);
CREATE INDEX web_sessions_admin ON web_sessions (admin);
CREATE INDEX web_sessions_last_seen ON web_sessions (last_seen);

GRANT SELECT, INSERT, UPDATE, DELETE ON web_sessions TO mailstack_admin;
-- The sign-in: the password hash and whether the account is active; the principal's role
-- and domains.
GRANT SELECT ON admins, admin_domains TO mailstack_admin;
-- The second factor: enrol (insert, or replace an unconfirmed secret), confirm with the
-- recovery codes, use a code (last_step) or a recovery code (delete).
GRANT SELECT, INSERT ON mfa_totp TO mailstack_admin;
GRANT UPDATE (sealed, last_step, created, confirmed) ON mfa_totp TO mailstack_admin;
GRANT SELECT, INSERT, DELETE ON mfa_recovery_codes TO mailstack_admin;
