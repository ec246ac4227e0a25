-- 0014: a new password ends the web sessions begun with the old one, whoever set it (the
-- CLI, the API, an administrator's page, the user's own self-service): someone who knew the
-- old password and signed in with it is out. The user who changed their own password gets
-- a new session in the same request (mailstack.api.selfservice.change_password). IMAP,
-- SMTP and ManageSieve sessions are ended by the caller (doveadm kick, directly or as a
-- host job): the database cannot reach Dovecot.
CREATE FUNCTION mailstack_password_ends_sessions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.password IS DISTINCT FROM OLD.password THEN
        IF TG_TABLE_NAME = 'mailboxes' THEN
            DELETE FROM web_sessions WHERE mailbox = NEW.address;
        ELSE
            DELETE FROM web_sessions WHERE admin = NEW.name;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION mailstack_password_ends_sessions() FROM PUBLIC;

CREATE TRIGGER mailboxes_password_ends_sessions AFTER UPDATE OF password ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION mailstack_password_ends_sessions();
CREATE TRIGGER admins_password_ends_sessions AFTER UPDATE OF password ON admins
    FOR EACH ROW EXECUTE FUNCTION mailstack_password_ends_sessions();
