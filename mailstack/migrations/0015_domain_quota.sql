-- 0015: a domain's total quota (issue 16: domain administrators set their mailboxes' quotas
-- "within a domain quota"). 0 is no domain quota. With one, the sum of the domain's
-- mailboxes' quotas stays within it and none of them is unlimited: mailstack.accounts.
-- domain_quota checks it in the transaction that writes, after locking the domain's row.
ALTER TABLE domains ADD COLUMN quota_bytes bigint NOT NULL DEFAULT 0
    CHECK (quota_bytes >= 0);

-- An administrator sets it through the API or the page (domain administrators only read
-- it: the API refuses them). The audit trigger of 0003 records the change as domain.quota.
GRANT UPDATE (quota_bytes) ON domains TO mailstack_admin;
