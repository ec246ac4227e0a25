-- 0006: the rest of the REST API's directory (issue 16): domains, mailboxes, aliases and
-- tokens, scoped by role; and the host job queue through which the admin service asks the
-- host for what it cannot do itself (it has no Docker socket): a new domain's DKIM key, the
-- end of a removed user's IMAP sessions.

-- Host jobs: requested by the admin service, taken by `mailstack jobs run` on the host.
-- requested_by is the session's actor (mailstack.adapters.psql sets it for every session),
-- requested_role the database role that asked; the requester never chooses either.
CREATE TABLE host_jobs (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('domain.publish_key', 'sessions.kick')),
    target          text        NOT NULL CHECK (length(target) BETWEEN 1 AND 320),
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'running', 'done', 'failed')),
    requested_by    text        NOT NULL DEFAULT left(coalesce(
                                    nullif(current_setting('mailstack.actor', true), ''),
                                    'db:' || session_user), 400),
    requested_role  text        NOT NULL DEFAULT current_user,
    requested       timestamptz NOT NULL DEFAULT now(),
    started         timestamptz,
    finished        timestamptz,
    reason          text        NOT NULL DEFAULT '' CHECK (length(reason) <= 400)
);
CREATE INDEX host_jobs_pending ON host_jobs (id) WHERE state IN ('pending', 'running');
CREATE INDEX host_jobs_target ON host_jobs (kind, target, id);
REVOKE ALL ON host_jobs FROM PUBLIC;

-- The admin service may only add a pending job (kind and target; the rest are defaults) and
-- read the jobs it added. Row security holds it to its own rows; the host's superuser,
-- which runs the jobs, is not subject to it.
ALTER TABLE host_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY host_jobs_admin_adds ON host_jobs FOR INSERT TO mailstack_admin
    WITH CHECK (requested_role = current_user AND state = 'pending');
CREATE POLICY host_jobs_admin_reads ON host_jobs FOR SELECT TO mailstack_admin
    USING (requested_role = current_user);
GRANT INSERT (kind, target) ON host_jobs TO mailstack_admin;
GRANT SELECT ON host_jobs TO mailstack_admin;

-- A revoked token stays revoked, whoever updates the row: the API may now revoke tokens
-- (UPDATE of revoked), never bring one back.
CREATE FUNCTION mailstack_token_stays_revoked() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF OLD.revoked IS NOT NULL AND NEW.revoked IS DISTINCT FROM OLD.revoked THEN
        RAISE EXCEPTION 'API token % is revoked for good', OLD.name;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER api_tokens_stay_revoked BEFORE UPDATE OF revoked ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION mailstack_token_stays_revoked();

-- Who a token acts for (identity.principal.for_admin): an administrator's name, role and
-- state, never its password; a domain administrator's domains.
GRANT SELECT (name, role, active) ON admins TO mailstack_admin;
GRANT SELECT ON admin_domains TO mailstack_admin;

-- Domains (accounts.directory.add_domain / remove_domain, without --force). remove_domain
-- locks the domain row (SELECT ... FOR UPDATE, which needs an UPDATE right on a column:
-- `active`, which the web admin will switch) and runs its statements whatever the guard
-- says, so it needs the rights of its DELETEs on alias_domains and sender_permissions even
-- though, without --force, they delete nothing of a domain in use.
GRANT INSERT (name), DELETE ON domains TO mailstack_admin;
GRANT UPDATE (active) ON domains TO mailstack_admin;
GRANT SELECT, DELETE ON alias_domains, sender_permissions TO mailstack_admin;

-- Mailboxes: removed (their aliases too), a new password, a new quota.
GRANT UPDATE (password, quota_bytes), DELETE ON mailboxes TO mailstack_admin;

-- Aliases (accounts.aliases).
GRANT SELECT, DELETE ON aliases TO mailstack_admin;
GRANT INSERT (source, domain, destination) ON aliases TO mailstack_admin;

-- API tokens made and revoked through the API (identity.tokens).
GRANT INSERT (name, token_hash, scopes, created_by, expires) ON api_tokens TO mailstack_admin;
GRANT UPDATE (revoked) ON api_tokens TO mailstack_admin;
