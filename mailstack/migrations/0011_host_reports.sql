-- 0011: what the host knows and the admin service cannot ask for itself (it has no Docker
-- socket, by design): service health, bans, the mail queue, backups, DNS records and checks.
-- `mailstack jobs run` (the host's per-minute timer, mailstack.runtime.hostreports) writes
-- each topic's latest report; the admin service only reads them. And the host jobs its
-- pages ask for: clear a ban, retry or delete queued mail, rotate a DKIM key, refresh a
-- report now.

CREATE TABLE host_reports (
    topic   text        PRIMARY KEY
                        CHECK (topic IN ('health', 'bans', 'queue', 'backups', 'dns')),
    body    jsonb       NOT NULL,
    taken   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON host_reports FROM PUBLIC;
GRANT SELECT ON host_reports TO mailstack_admin;

ALTER TABLE host_jobs DROP CONSTRAINT host_jobs_kind_check;
ALTER TABLE host_jobs ADD CONSTRAINT host_jobs_kind_check CHECK (kind IN (
    'domain.publish_key', 'sessions.kick', 'ban.clear', 'queue.retry', 'queue.delete',
    'dkim.rotate', 'report.refresh'));

-- A job that changes the stack is a change an administrator asked for: the audit log names
-- who asked, from where, and the job's number (the job itself records how it ended). Asking
-- for a fresher report changes nothing and is not logged.
CREATE FUNCTION mailstack_audit_host_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.kind IN ('ban.clear', 'queue.retry', 'queue.delete', 'dkim.rotate') THEN
        PERFORM mailstack_audit_write(NEW.kind, NEW.target, 'host job #' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER host_jobs_audit AFTER INSERT ON host_jobs
    FOR EACH ROW EXECUTE FUNCTION mailstack_audit_host_job();
