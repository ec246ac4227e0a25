-- 0001: the mail directory (domains, mailboxes, aliases) and the read-only views that
-- Postfix and Dovecot query. Applied by mailstack (directory.migrate) in one transaction,
-- as the superuser, in database `mail`. The lookup roles see the views, never the tables.

CREATE TABLE domains (
    name        text        PRIMARY KEY
                            CHECK (name = lower(name) AND length(name) BETWEEN 3 AND 253),
    active      boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mailboxes (
    address     text        PRIMARY KEY
                            CHECK (address = lower(address) AND length(address) <= 320),
    local_part  text        NOT NULL CHECK (length(local_part) BETWEEN 1 AND 64),
    domain      text        NOT NULL REFERENCES domains (name) ON DELETE RESTRICT,
    password    text        NOT NULL CHECK (password LIKE '{%}%'),
    quota_bytes bigint      NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0),
    active      boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now(),
    CHECK (address = local_part || '@' || domain)
);
CREATE INDEX mailboxes_domain ON mailboxes (domain);

-- source is an address, or '@domain' for a catch-all; one row per destination.
CREATE TABLE aliases (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text        NOT NULL CHECK (source = lower(source) AND source LIKE '%@%'),
    domain      text        NOT NULL REFERENCES domains (name) ON DELETE RESTRICT,
    destination text        NOT NULL CHECK (destination LIKE '%@%'),
    active      boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, destination),
    CHECK (source LIKE '%@' || domain)
);
CREATE INDEX aliases_domain ON aliases (domain);

-- Postfix: virtual_mailbox_domains.
CREATE VIEW postfix_domains AS
    SELECT name FROM domains WHERE active;

-- Postfix: virtual_mailbox_maps (the value only has to exist; LMTP delivers to Dovecot).
CREATE VIEW postfix_mailboxes AS
    SELECT m.address, m.domain || '/' || m.local_part || '/' AS maildir
    FROM mailboxes m JOIN domains d ON d.name = m.domain
    WHERE m.active AND d.active;

-- Postfix: virtual_alias_maps. Every mailbox maps to itself as well, so a catch-all
-- ('@domain') never swallows mail for a mailbox that exists.
CREATE VIEW postfix_aliases AS
    SELECT a.source, a.destination
    FROM aliases a JOIN domains d ON d.name = a.domain
    WHERE a.active AND d.active
    UNION ALL
    SELECT address, address FROM postfix_mailboxes;

-- Dovecot: passdb and userdb (home under /var/mail/<domain>/<local part>/).
CREATE VIEW dovecot_users AS
    SELECT m.address AS username,
           m.password,
           m.domain,
           m.local_part,
           '/var/mail/' || m.domain || '/' || m.local_part AS home,
           m.quota_bytes
    FROM mailboxes m JOIN domains d ON d.name = m.domain
    WHERE m.active AND d.active;

REVOKE ALL ON domains, mailboxes, aliases FROM PUBLIC;
GRANT SELECT ON postfix_domains, postfix_mailboxes, postfix_aliases TO postfix;
GRANT SELECT ON dovecot_users TO dovecot;
