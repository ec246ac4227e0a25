-- 0012: alias domains and sender grants through the admin service (issue 16,
-- mailstack.api.aliasdomains): what their adds need of the role mailstack_admin beyond the
-- earlier grants. Already granted: SELECT and DELETE on alias_domains and
-- sender_permissions (0006: listings, removals, and the RETURNING and WHERE of the adds),
-- SELECT on domains and mailboxes (0004: the adds check the target, the mailbox), INSERT
-- (kind, target) on host_jobs (0006: the new alias domain's DKIM key queued for the host).

-- accounts.alias_domains.add_alias_domain: INSERT (name, target) ... ON CONFLICT (name) DO
-- NOTHING; `active` and `created` take their defaults.
GRANT INSERT (name, target) ON alias_domains TO mailstack_admin;

-- accounts.access.add_sender: INSERT (sender, login) ... ON CONFLICT (sender, login) DO
-- NOTHING; `id` and `created` take their defaults.
GRANT INSERT (sender, login) ON sender_permissions TO mailstack_admin;
