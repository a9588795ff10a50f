//! Task events, kept so a stream can resume after the last id a client saw.

use sqlx::Row;

use crate::rows::{event_columns, event_from_row};
use crate::writer::Op;
use crate::{EventRow, Store, StoreError};

impl Store {
    /// Appends an event whose id the caller chose. Group-committed; an id already used gives
    /// [`StoreError::Conflict`].
    pub async fn append_event(&self, event: &EventRow) -> Result<(), StoreError> {
        self.writer()
            .submit(Op::Event(event.clone()))
            .await
            .map(|_| ())
    }

    /// Events with `id > after`, only those of `task_id` and/or `key_id` when given, by
    /// ascending id, at most `limit` (a negative limit counts as 0).
    pub async fn events_after(
        &self,
        after: i64,
        task_id: Option<&str>,
        key_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let op = || format!("events_after({after}, task {task_id:?}, key {key_id:?})");
        let limit = limit.max(0);
        // One fixed statement per filter combination keeps each query plan-friendly (an
        // `($2 IS NULL OR task_id = $2)` form can keep PostgreSQL off the index).
        let query = match (task_id, key_id) {
            (Some(task_id), Some(key_id)) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 AND task_id = $2 AND key_id = $3 ORDER BY id LIMIT $4"
            ))
            .bind(after)
            .bind(task_id.to_owned())
            .bind(key_id.to_owned())
            .bind(limit),
            (Some(task_id), None) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 AND task_id = $2 ORDER BY id LIMIT $3"
            ))
            .bind(after)
            .bind(task_id.to_owned())
            .bind(limit),
            (None, Some(key_id)) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 AND key_id = $2 ORDER BY id LIMIT $3"
            ))
            .bind(after)
            .bind(key_id.to_owned())
            .bind(limit),
            (None, None) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after)
            .bind(limit),
        };
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e))
    }

    /// The highest event id stored, 0 when there is none (to continue numbering after a
    /// restart).
    pub async fn max_event_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(self.pool())
            .await
            .map_err(|e| StoreError::query("max_event_id", e))?;
        row.try_get(0)
            .map_err(|e| StoreError::query("max_event_id", e))
    }
}
