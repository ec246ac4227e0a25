-- 0002: app passwords, alias domains and sender permissions, and the views Postfix and
-- Dovecot read them through. Applied by mailstack (directory.migrate) in one transaction.

-- App passwords: extra passwords of a mailbox, each with a name, revocable on its own.
-- lookup_key is the first 32 bits of SHA-256 of the (generated, 100-bit) password, hex: it
-- picks the one row Dovecot verifies (its passdb takes one row), and says nothing usable
-- about the password. The password itself is stored as an Argon2id hash like the main one.
CREATE TABLE app_passwords (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address     text        NOT NULL REFERENCES mailboxes (address) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    lookup_key  text        NOT NULL CHECK (lookup_key ~ '^[0-9a-f]{8}$'),
    password    text        NOT NULL CHECK (password LIKE '{%}%'),
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (address, name),
    UNIQUE (address, lookup_key)
);

-- Alias domains: mail to user@name is handled as mail to user@target.
CREATE TABLE alias_domains (
    name        text        PRIMARY KEY
                            CHECK (name = lower(name) AND length(name) BETWEEN 3 AND 253),
    target      text        NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    active      boolean     NOT NULL DEFAULT true,
    created     timestamptz NOT NULL DEFAULT now(),
    CHECK (name <> target)
);
CREATE INDEX alias_domains_target ON alias_domains (target);

-- A name is either a mail domain or an alias domain, never both.
CREATE FUNCTION mailstack_domain_kinds_disjoint() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_TABLE_NAME = 'domains'
        AND EXISTS (SELECT 1 FROM alias_domains WHERE name = NEW.name) THEN
        RAISE EXCEPTION 'domain % is already an alias domain', NEW.name
            USING HINT = 'remove it first: mailstack domain alias remove ' || NEW.name;
    END IF;
    IF TG_TABLE_NAME = 'alias_domains'
        AND EXISTS (SELECT 1 FROM domains WHERE name = NEW.name) THEN
        RAISE EXCEPTION 'domain % is already a mail domain', NEW.name;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER domains_not_alias_domains BEFORE INSERT OR UPDATE OF name ON domains
    FOR EACH ROW EXECUTE FUNCTION mailstack_domain_kinds_disjoint();
CREATE TRIGGER alias_domains_not_domains BEFORE INSERT OR UPDATE OF name ON alias_domains
    FOR EACH ROW EXECUTE FUNCTION mailstack_domain_kinds_disjoint();

-- Sender permissions: login (a mailbox) may use sender (an address, or '@domain' for every
-- address of a domain) as its envelope sender on 587/465. A mailbox may always use its own
-- address; everything else needs a row here.
CREATE TABLE sender_permissions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender      text        NOT NULL CHECK (sender = lower(sender) AND sender LIKE '%@%'
                                            AND length(sender) <= 320),
    login       text        NOT NULL REFERENCES mailboxes (address) ON DELETE CASCADE,
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sender, login)
);

-- Postfix: virtual_alias_domains.
CREATE VIEW postfix_alias_domains AS
    SELECT a.name FROM alias_domains a JOIN domains d ON d.name = a.target
    WHERE a.active AND d.active;

-- Postfix: virtual_alias_maps, now also user@alias-domain -> user@target for every mailbox
-- and alias of the target (so unknown users of an alias domain are still refused at RCPT),
-- and the target's catch-all for the alias domain's catch-all.
CREATE OR REPLACE VIEW postfix_aliases AS
    SELECT a.source, a.destination
    FROM aliases a JOIN domains d ON d.name = a.domain
    WHERE a.active AND d.active
    UNION ALL
    SELECT address, address FROM postfix_mailboxes
    UNION ALL
    SELECT m.local_part || '@' || ad.name, m.address
    FROM mailboxes m JOIN domains d ON d.name = m.domain
    JOIN alias_domains ad ON ad.target = m.domain
    WHERE m.active AND d.active AND ad.active
    UNION ALL
    SELECT DISTINCT split_part(a.source, '@', 1) || '@' || ad.name, a.source
    FROM aliases a JOIN alias_domains ad ON ad.target = a.domain
    JOIN domains d ON d.name = a.domain
    WHERE a.active AND d.active AND ad.active AND a.source NOT LIKE '@%'
    UNION ALL
    SELECT '@' || ad.name, a.destination
    FROM aliases a JOIN alias_domains ad ON ad.target = a.domain
    JOIN domains d ON d.name = a.domain
    WHERE a.active AND d.active AND ad.active AND a.source LIKE '@%';

-- Postfix: smtpd_sender_login_maps (sender address -> logins that may use it). Every
-- mailbox owns its address (and the same local part in the alias domains of its domain);
-- grants in sender_permissions add the rest, '@domain' for every address of a domain.
-- (Postfix would look up @domain only when the address finds nothing, so the query in
-- sender_login_maps.cf asks for both at once.)
CREATE VIEW postfix_senders AS
    SELECT address AS sender, address AS login FROM postfix_mailboxes
    UNION ALL
    SELECT m.local_part || '@' || ad.name, m.address
    FROM mailboxes m JOIN domains d ON d.name = m.domain
    JOIN alias_domains ad ON ad.target = m.domain
    WHERE m.active AND d.active AND ad.active
    UNION ALL
    SELECT s.sender, s.login FROM sender_permissions s
    JOIN postfix_mailboxes m ON m.address = s.login;

-- Dovecot: the second passdb (an app password in place of the main one).
CREATE VIEW dovecot_app_passwords AS
    SELECT p.address AS username, p.lookup_key, p.password
    FROM app_passwords p JOIN dovecot_users u ON u.username = p.address;

REVOKE ALL ON app_passwords, alias_domains, sender_permissions FROM PUBLIC;
GRANT SELECT ON postfix_alias_domains, postfix_aliases, postfix_senders TO postfix;
GRANT SELECT ON dovecot_app_passwords TO dovecot;
