//! Used nonces of signing keys: replay protection that survives a restart.

use crate::rows::nonce_from_row;
use crate::writer::{Op, PendingWrite};
use crate::{NonceRow, Store, StoreError};

impl Store {
    /// Records that `key_id` used `nonce` at `ts` (unix seconds). `Ok(true)` when the nonce
    /// is new, `Ok(false)` when that key already used it (a replay). On SQLite a nonce counts
    /// as used per timestamp: a replay repeats the signed timestamp, and the gateway that owns
    /// a SQLite file decides replays in memory anyway (migration 0003 says why).
    /// Group-committed: the answer comes after the row is committed.
    pub async fn insert_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        ts: i64,
    ) -> Result<bool, StoreError> {
        self.writer()
            .submit(Op::Nonce(NonceRow {
                key_id: key_id.to_owned(),
                nonce: nonce.to_owned(),
                ts,
            }))
            .await
    }

    /// Like [`Store::insert_nonce`] but returns once the row is queued: the caller can do
    /// other work while the group commits and then wait with [`PendingWrite::committed`].
    pub async fn queue_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        ts: i64,
    ) -> Result<PendingWrite, StoreError> {
        self.writer()
            .enqueue(Op::Nonce(NonceRow {
                key_id: key_id.to_owned(),
                nonce: nonce.to_owned(),
                ts,
            }))
            .await
    }

    /// Every nonce with `ts >= since`, oldest first, to warm an in-memory cache at start.
    pub async fn nonces_since(&self, since: i64) -> Result<Vec<NonceRow>, StoreError> {
        let op = || format!("nonces_since({since})");
        let rows = sqlx::query(
            "SELECT key_id, nonce, ts FROM nonces WHERE ts >= $1 ORDER BY ts, key_id, nonce",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        rows.iter()
            .map(nonce_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e))
    }

    /// Deletes nonces with `ts < before` (outside the replay window); returns how many.
    pub async fn prune_nonces(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM nonces WHERE ts < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(|e| StoreError::query(format!("prune_nonces({before})"), e))?;
        Ok(done.rows_affected())
    }
}
