-- 0016: each mail domain's DNS report is a host report of its own, topic "dns:<domain>",
-- so a stack hosting many domains has each one's records and checks, not the first fifteen
-- (one report travels as one psql argument, at most 100,000 bytes). The dns topic becomes
-- their index. A domain as mailstack stores it: lower-case punycode labels of letters,
-- digits and inner hyphens, at most 253 characters (mailstack.runtime.hostreports says
-- the same). The host's writer deletes the reports of domains no longer hosted; the admin
-- role still only reads.

ALTER TABLE host_reports DROP CONSTRAINT host_reports_topic_check;
ALTER TABLE host_reports ADD CONSTRAINT host_reports_topic_check CHECK (
    topic IN ('health', 'bans', 'queue', 'backups', 'dns')
    OR (
        char_length(topic) <= 4 + 253
        AND topic ~ '^dns:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'
    )
);
