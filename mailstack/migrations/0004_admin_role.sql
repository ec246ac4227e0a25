-- 0004: what the admin service (features.admin) may do in the directory, as the role
-- mailstack_admin (made by the db image's db-roles.sql at every start, able to log in only
-- while the admin service is on). Exactly what its API needs: list and add mailboxes
-- (add_mailbox checks the domain), and authenticate API tokens (recording their last use).
-- Everything else it would do is granted by the migration that brings it.
GRANT SELECT ON domains, mailboxes TO mailstack_admin;
GRANT INSERT ON mailboxes TO mailstack_admin;
GRANT SELECT ON api_tokens TO mailstack_admin;
GRANT UPDATE (last_used) ON api_tokens TO mailstack_admin;
