-- 0007: the second factor at every door (issue 16, policy.mfa_protocols). Applied by
-- mailstack (migrations.migrate) in one transaction.

-- Dovecot's first passdb (the account password) reads this view: second_factor says whether
-- the mailbox has a confirmed TOTP. With policy.mfa_protocols: app_passwords_only the query
-- (config/dovecot/dovecot-sql.conf.ext) finds no row for such a mailbox unless the
-- connection comes from the webmail, which asks for the code itself; its app passwords
-- (the second passdb, dovecot_app_passwords) still work everywhere.
CREATE VIEW dovecot_password_logins AS
    SELECT u.username, u.password,
        EXISTS (SELECT 1 FROM mfa_totp t
                WHERE t.mailbox = u.username AND t.confirmed IS NOT NULL) AS second_factor
    FROM dovecot_users u;
GRANT SELECT ON dovecot_password_logins TO dovecot;

-- The admin service checks a webmail user's code (POST /internal/v1/mfa/verify, from the
-- webmail only) with mailstack.identity.mfa: it reads the sealed secret, stores the step it
-- accepted (the replay guard) and spends a recovery code. mfa.py's statements name admins
-- too (one query serves both kinds of owner), so the role may read administrators' names,
-- nothing else of them.
GRANT SELECT (name) ON admins TO mailstack_admin;
GRANT SELECT ON mfa_totp, mfa_recovery_codes TO mailstack_admin;
GRANT UPDATE (last_step) ON mfa_totp TO mailstack_admin;
GRANT DELETE ON mfa_recovery_codes TO mailstack_admin;
