-- 0010: users' self-service at /account/ (issue 16, mailstack.api.selfservice): what its
-- pages need of the role mailstack_admin beyond the earlier grants. Already granted: SELECT
-- on mailboxes (0004: the sign-in reads the account password's hash and `active`),
-- UPDATE (password) on mailboxes (0006: the password form), web_sessions (0005), the second
-- factor's enrolment, confirmation and checks (0005, 0007), host_jobs INSERT (0006: the
-- kick of IMAP sessions after an app password is removed).

-- App passwords of the session's own mailbox (accounts.access): listed (names and dates;
-- the SELECT also reads the count and the name taken before an insert), made (the columns
-- of the INSERT only), removed (DELETE ... WHERE address = the session's mailbox).
GRANT SELECT ON app_passwords TO mailstack_admin;
GRANT INSERT (address, name, lookup_key, password) ON app_passwords TO mailstack_admin;
GRANT DELETE ON app_passwords TO mailstack_admin;

-- Turning one's own second factor off (mfa.disable, after a current code): the row goes,
-- its recovery codes with it (ON DELETE CASCADE). This gives a foothold in the admin
-- container nothing new: with UPDATE (sealed) (0005) and the mounted mfa_key it could
-- already replace any second factor with one of its own.
GRANT DELETE ON mfa_totp TO mailstack_admin;
