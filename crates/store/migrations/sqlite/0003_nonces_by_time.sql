-- Nonces keyed by time first. On SQLite one gateway owns the file and its in-memory nonce
-- cache (warmed from this table at start) decides replays, so this table is a durable log.
-- Keyed by (ts, key_id, nonce), each insert lands at the end of the B-tree; keyed by the
-- random nonce first, every request dirtied (and wrote to the WAL) a page of its own. A replay
-- repeats the signed timestamp, so it still conflicts here; a nonce reused under another
-- timestamp needs the key's secret and is caught by the cache.
CREATE TABLE nonces_by_time (
    ts     INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    nonce  TEXT NOT NULL,
    PRIMARY KEY (ts, key_id, nonce)
) WITHOUT ROWID;
INSERT INTO nonces_by_time (ts, key_id, nonce) SELECT ts, key_id, nonce FROM nonces;
DROP TABLE nonces;
ALTER TABLE nonces_by_time RENAME TO nonces;
