-- 0017: on a cluster each mailbox has a home back end, the mailbox node that holds its mail
-- (docs/cluster.md). `mailbox add` fills it and `mailbox move` changes it; NULL on one host,
-- and on a cluster it stands for the first mailbox node. A node's name is its hostname: one
-- DNS label of lower-case letters, digits and inner hyphens (mailstack.yaml's check says the
-- same). Dovecot's edge proxy reads it alone, to pass each login and delivery on.

ALTER TABLE mailboxes ADD COLUMN back_end text
    CHECK (back_end ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$');

CREATE VIEW dovecot_back_ends AS
    SELECT m.address AS username, m.back_end FROM mailboxes m;
GRANT SELECT ON dovecot_back_ends TO dovecot;
