-- 0009: the web admin's audit log page (compose/admin/webdirectory.py) reads the log for an
-- administrator. SELECT only: the role still cannot write, change or delete an entry (the
-- triggers of 0003 write it as the schema's owner), so it cannot forge or hide one.
GRANT SELECT ON audit_log TO mailstack_admin;
