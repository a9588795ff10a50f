//! What the MCP server keeps between tool calls, in memory: each task's
//! confirm token (so the model never sees it) and the open approval
//! questions of the stateless (2026-07-28) protocol, whose answer comes back
//! in a later request.
//!
//! Everything is keyed by the caller's key id as well as the task, so one
//! key can never use a token or an answer that belongs to another.

use std::collections::HashMap;
use std::sync::Mutex;

/// A confirm token held for a task.
#[derive(Debug, Clone)]
struct Held {
    token: String,
    expires_at: i64,
}

/// An approval question sent to a client with `InputRequiredResult`.
#[derive(Debug, Clone)]
struct Asked {
    key_id: String,
    task_id: String,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<(String, String), Held>,
    asked: HashMap<String, Asked>,
}

/// Tokens and open questions, shared by every MCP session of one process.
#[derive(Debug, Default)]
pub struct Approvals {
    inner: Mutex<Inner>,
}

impl Approvals {
    /// Keeps the confirm token of `task_id`, planned by `key_id`, until it expires.
    pub fn keep(&self, key_id: &str, task_id: &str, token: String, expires_at: i64, now: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.prune(now);
            inner.tokens.insert(
                (key_id.to_string(), task_id.to_string()),
                Held { token, expires_at },
            );
        }
    }

    /// The held token of a task, if this key planned it here and it has not expired.
    pub fn token(&self, key_id: &str, task_id: &str, now: i64) -> Option<String> {
        let inner = self.inner.lock().ok()?;
        inner
            .tokens
            .get(&(key_id.to_string(), task_id.to_string()))
            .filter(|h| h.expires_at >= now)
            .map(|h| h.token.clone())
    }

    /// Drops a task's token (it was used, or can no longer be).
    pub fn forget(&self, key_id: &str, task_id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner
                .tokens
                .remove(&(key_id.to_string(), task_id.to_string()));
        }
    }

    /// Records an approval question about `task_id` for `key_id`; returns
    /// the opaque handle the client echoes back as `requestState`.
    pub fn ask(&self, key_id: &str, task_id: &str, expires_at: i64, now: i64) -> String {
        let bytes: [u8; 24] = rand::random();
        let handle = format!("ask_{}", hex::encode(bytes));
        if let Ok(mut inner) = self.inner.lock() {
            inner.prune(now);
            inner.asked.insert(
                handle.clone(),
                Asked {
                    key_id: key_id.to_string(),
                    task_id: task_id.to_string(),
                    expires_at,
                },
            );
        }
        handle
    }

    /// Takes the question behind `handle` (each answer is used once): the
    /// task it was about, if the handle is known, unexpired and was issued
    /// to `key_id`. A handle presented by another key stays unanswered.
    pub fn answer(&self, handle: &str, key_id: &str, now: i64) -> Option<String> {
        let mut inner = self.inner.lock().ok()?;
        let asked = inner.asked.get(handle)?;
        if asked.key_id != key_id {
            return None;
        }
        let asked = inner.asked.remove(handle)?;
        (asked.expires_at >= now).then_some(asked.task_id)
    }

    /// How many tokens and questions are held (for tests and metrics).
    pub fn len(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.tokens.len(), i.asked.len()))
            .unwrap_or_default()
    }
}

impl Inner {
    /// Expired entries go on every insert, so memory stays bounded by what
    /// the rate limits let a key plan within one confirm-token lifetime.
    fn prune(&mut self, now: i64) {
        self.tokens.retain(|_, h| h.expires_at >= now);
        self.asked.retain(|_, a| a.expires_at >= now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tokens_are_per_key_and_task_and_expire() {
        let a = Approvals::default();
        a.keep("k1", "t1", "ct_one".into(), 100, 0);
        assert_eq!(a.token("k1", "t1", 50).as_deref(), Some("ct_one"));
        assert_eq!(
            a.token("k2", "t1", 50),
            None,
            "another key never sees the token"
        );
        assert_eq!(a.token("k1", "t2", 50), None);
        assert_eq!(a.token("k1", "t1", 101), None, "expired");
        a.forget("k1", "t1");
        assert_eq!(a.token("k1", "t1", 50), None);
    }

    #[test]
    fn expired_entries_are_pruned_on_insert() {
        let a = Approvals::default();
        a.keep("k", "old", "x".into(), 10, 0);
        let _ = a.ask("k", "old", 10, 0);
        assert_eq!(a.len(), (1, 1));
        a.keep("k", "new", "y".into(), 100, 50);
        assert_eq!(
            a.len(),
            (1, 0),
            "the token and the question of 'old' are gone"
        );
        assert_eq!(a.token("k", "new", 60).as_deref(), Some("y"));
    }

    #[test]
    fn an_answer_is_used_once_and_only_by_its_key() {
        let a = Approvals::default();
        let h = a.ask("k1", "t1", 100, 0);
        assert!(h.starts_with("ask_") && h.len() > 40);
        assert_eq!(a.answer(&h, "k2", 10), None, "another key cannot answer");
        assert_eq!(a.answer(&h, "k1", 10).as_deref(), Some("t1"));
        assert_eq!(a.answer(&h, "k1", 10), None, "second use");
        assert_eq!(a.answer("ask_made_up", "k1", 10), None);
        let late = a.ask("k1", "t2", 100, 0);
        assert_eq!(a.answer(&late, "k1", 101), None, "expired");
    }

    #[test]
    fn handles_are_unguessable() {
        let a = Approvals::default();
        let h1 = a.ask("k", "t", 100, 0);
        let h2 = a.ask("k", "t", 100, 0);
        assert_ne!(h1, h2);
    }
}
