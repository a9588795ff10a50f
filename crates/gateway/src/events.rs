//! Task events: numbered, stored, and broadcast live. A subscriber that
//! reconnects with `Last-Event-ID` gets what it missed from the store, then
//! the live stream.
//!
//! Events are published concurrently (many tasks run at once) and their
//! stores may commit in any order, yet a subscriber keeps only a "last id
//! sent" and skips anything at or below it. So the live broadcast goes out
//! strictly in id order: an event that is stored before a lower id waits
//! until that one is stored (or has failed). The `watermark` is the highest
//! id up to which everything was stored and broadcast; a backlog read stops
//! there, and the live stream brings the rest, so nothing falls in a gap.

use bytebot_store::{EventRow, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// The kinds of event the spec names.
pub mod kind {
    /// A plan was made.
    pub const PLAN_CREATED: &str = "plan.created";
    /// A plan was approved (by token at execute, or by a person).
    pub const PLAN_APPROVED: &str = "plan.approved";
    /// A step began.
    pub const STEP_STARTED: &str = "step.started";
    /// Output of a running step (stdout/stderr chunks).
    pub const STEP_OUTPUT: &str = "step.output";
    /// A step ended.
    pub const STEP_FINISHED: &str = "step.finished";
    /// An artifact was stored.
    pub const ARTIFACT: &str = "artifact";
    /// The task ended.
    pub const TASK_FINISHED: &str = "task.finished";
    /// Something failed.
    pub const ERROR: &str = "error";
}

/// One event as subscribers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    /// Increasing id (the SSE `id:`).
    pub id: i64,
    /// Task it belongs to.
    pub task_id: String,
    /// One of the kinds in [`kind`].
    pub kind: String,
    /// Kind-specific data.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Key that owns the task (not sent to clients).
    #[serde(skip)]
    pub key_id: String,
}

impl Event {
    fn from_row(row: EventRow) -> Self {
        Event {
            id: row.id,
            task_id: row.task_id,
            kind: row.kind,
            data: serde_json::from_str(&row.data_json).unwrap_or(Value::Null),
            ts_ms: row.ts_ms,
            key_id: row.key_id,
        }
    }
}

/// Numbers, stores and broadcasts events.
pub struct EventBus {
    shared: Arc<Shared>,
    next: AtomicI64,
}

/// What the publishing tasks share.
struct Shared {
    store: Store,
    live: broadcast::Sender<Arc<Event>>,
    order: Mutex<Sequencer>,
    /// Every id up to this one is stored (or failed) and broadcast.
    watermark: AtomicI64,
}

/// Events stored out of order, waiting for the ids before them.
struct Sequencer {
    /// The next id to broadcast.
    next_out: i64,
    /// Stored (`Some`) or failed (`None`) events above `next_out`.
    done: BTreeMap<i64, Option<Arc<Event>>>,
}

impl Shared {
    /// Marks `id` stored (with its event) or failed (`None`), and broadcasts
    /// every event that is now next in line.
    fn finish(&self, id: i64, event: Option<Arc<Event>>) {
        let Ok(mut seq) = self.order.lock() else {
            tracing::error!("event sequencer poisoned; live events stop");
            return;
        };
        seq.done.insert(id, event);
        loop {
            let next = seq.next_out;
            let Some(ready) = seq.done.remove(&next) else {
                break;
            };
            if let Some(e) = ready {
                // No subscribers is fine: the store has it.
                let _ = self.live.send(e);
            }
            seq.next_out = next + 1;
        }
        self.watermark.store(seq.next_out - 1, Ordering::SeqCst);
    }
}

impl EventBus {
    /// Continues numbering after the highest stored id.
    pub async fn new(store: Store) -> Result<Self, StoreError> {
        let max = store.max_event_id().await?;
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                live,
                order: Mutex::new(Sequencer {
                    next_out: max + 1,
                    done: BTreeMap::new(),
                }),
                watermark: AtomicI64::new(max),
            }),
            next: AtomicI64::new(max + 1),
        })
    }

    /// Stores (group-committed) and then broadcasts one event, in id order,
    /// so a live subscriber never sees an event a reconnect could not find
    /// again, nor a higher id before a lower one.
    pub async fn publish(
        &self,
        task_id: &str,
        key_id: &str,
        kind: &str,
        data: Value,
    ) -> Result<Arc<Event>, StoreError> {
        let event = Arc::new(Event {
            id: self.next.fetch_add(1, Ordering::SeqCst),
            task_id: task_id.to_string(),
            kind: kind.to_string(),
            data,
            ts_ms: now_ms(),
            key_id: key_id.to_string(),
        });
        let row = EventRow {
            id: event.id,
            task_id: event.task_id.clone(),
            key_id: event.key_id.clone(),
            kind: event.kind.clone(),
            data_json: event.data.to_string(),
            ts_ms: event.ts_ms,
        };
        // Its own task, so a caller that goes away (a client hanging up)
        // cannot leave an id unfinished and stall every later event.
        let shared = Arc::clone(&self.shared);
        let sent = Arc::clone(&event);
        let stored = tokio::spawn(async move {
            let stored = shared.store.append_event(&row).await;
            shared.finish(row.id, stored.is_ok().then_some(sent));
            stored
        })
        .await;
        match stored {
            Ok(result) => result.map(|()| event),
            Err(join) => {
                // The task panicked or the runtime is stopping; do not hold up later ids.
                tracing::error!(error = %join, event = event.id, "the event store task ended");
                self.shared.finish(event.id, None);
                Err(StoreError::WriterStopped)
            }
        }
    }

    /// A live receiver; subscribe before reading the backlog so nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.live.subscribe()
    }

    /// The highest id up to which every event is stored and was broadcast;
    /// a stream that starts "now" starts after it.
    pub fn watermark(&self) -> i64 {
        self.shared.watermark.load(Ordering::SeqCst)
    }

    /// Stored events after `after`, filtered, at most `limit`, and none above
    /// the watermark (those come from the live stream). The flag says
    /// whether this reached the end of what the backlog can give.
    pub async fn backlog(
        &self,
        after: i64,
        task_id: Option<&str>,
        key_id: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let upto = self.watermark();
        let rows = self
            .shared
            .store
            .events_after(after, task_id, key_id, limit)
            .await?;
        let full_page = rows.len() as i64 >= limit;
        let mut events = Vec::with_capacity(rows.len());
        let mut reached_live = false;
        for row in rows {
            if row.id > upto {
                reached_live = true;
                break;
            }
            events.push(Event::from_row(row));
        }
        Ok((events, reached_live || !full_page))
    }

    /// How many live subscribers there are.
    pub fn subscribers(&self) -> usize {
        self.shared.live.receiver_count()
    }
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
