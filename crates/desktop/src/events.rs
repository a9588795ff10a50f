//! The desktop's event stream: every published [`DesktopEvent`] gets a
//! sequence number; subscribers get new events live and can ask for the ones
//! after a given number (SSE `Last-Event-ID`) from a bounded history.

use bytebot_protocol::DesktopEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many past events are kept for resuming subscribers.
const HISTORY: usize = 1024;

/// An event with its sequence number.
pub type Numbered = (u64, DesktopEvent);

/// Publishes events to any number of subscribers.
pub struct EventHub {
    tx: broadcast::Sender<(u64, DesktopEvent)>,
    history: Mutex<(u64, VecDeque<(u64, DesktopEvent)>)>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(HISTORY).0,
            history: Mutex::new((0, VecDeque::with_capacity(HISTORY))),
        }
    }
}

impl EventHub {
    /// Publishes an event; returns its sequence number.
    pub fn publish(&self, event: DesktopEvent) -> u64 {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.0 += 1;
        let id = h.0;
        if h.1.len() == HISTORY {
            h.1.pop_front();
        }
        h.1.push_back((id, event.clone()));
        // Sending under the lock keeps ids in order on the channel.
        let _ = self.tx.send((id, event));
        id
    }

    /// Subscribes; returns the kept events after `after` and the live receiver.
    pub fn subscribe(&self, after: Option<u64>) -> (Vec<Numbered>, broadcast::Receiver<Numbered>) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let backlog = match after {
            Some(after) => h.1.iter().filter(|(id, _)| *id > after).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, self.tx.subscribe())
    }
}
