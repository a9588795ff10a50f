-- Nothing changes on PostgreSQL: several gateways may share it, so it is the authority on
-- replays and (key_id, nonce) stays the key. (SQLite re-keys its nonce log by time in this step.)
SELECT 1;
