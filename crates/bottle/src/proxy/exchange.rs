//! One proxied request (or tunnel) on its way to an audit line. The bodies and the tunnel task
//! update its counters; the line is written when the last holder lets go of it, which is when
//! the response body (or the tunnel) is finished, whichever way it finished.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::audit::{AuditEntry, AuditLog, Decision, Mode, now_rfc3339};

use super::body::Direction;

/// What every exchange of one proxy shares.
#[derive(Debug)]
pub(crate) struct AuditContext {
    pub(crate) log: Arc<AuditLog>,
    pub(crate) bottle: String,
    /// Secret names by index (the bits of [`Exchange::mark_secrets`]).
    pub(crate) secret_names: Vec<String>,
}

#[derive(Debug)]
struct State {
    decision: Decision,
    rule: String,
    upstream: Option<String>,
    error: Option<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Exchange {
    ctx: Arc<AuditContext>,
    mode: Mode,
    method: String,
    host: String,
    port: u16,
    path: String,
    start: Instant,
    up: AtomicU64,
    down: AtomicU64,
    status: AtomicU16,
    secrets: AtomicU64,
    state: Mutex<State>,
}

/// What identifies an exchange in its audit line.
pub(crate) struct Target<'a> {
    pub(crate) mode: Mode,
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) path: &'a str,
}

impl Exchange {
    /// An allowed exchange under `rule`, timed from `start`.
    pub(crate) fn allowed(
        ctx: &Arc<AuditContext>,
        target: &Target<'_>,
        rule: String,
        start: Instant,
    ) -> Arc<Exchange> {
        Arc::new(Exchange::new(ctx, target, Decision::Allow, rule, start))
    }

    /// Writes the audit line of a refused request at once.
    pub(crate) fn record_denied(
        ctx: &Arc<AuditContext>,
        target: &Target<'_>,
        rule: String,
        status: u16,
        start: Instant,
    ) {
        let ex = Exchange::new(ctx, target, Decision::Deny, rule, start);
        ex.set_status(status);
    }

    fn new(
        ctx: &Arc<AuditContext>,
        target: &Target<'_>,
        decision: Decision,
        rule: String,
        start: Instant,
    ) -> Exchange {
        Exchange {
            ctx: Arc::clone(ctx),
            mode: target.mode,
            method: target.method.to_owned(),
            host: target.host.to_owned(),
            port: target.port,
            path: target.path.to_owned(),
            start,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            status: AtomicU16::new(0),
            secrets: AtomicU64::new(0),
            state: Mutex::new(State {
                decision,
                rule,
                upstream: None,
                error: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `n` bytes in `direction`.
    pub(crate) fn count(&self, direction: Direction, n: u64) {
        match direction {
            Direction::Up => self.up.fetch_add(n, Ordering::Relaxed),
            Direction::Down => self.down.fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Notes the secrets (bit mask by index) injected into this exchange.
    pub(crate) fn mark_secrets(&self, bits: u64) {
        self.secrets.fetch_or(bits, Ordering::Relaxed);
    }

    /// The status returned to the sandbox.
    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The address actually connected to.
    pub(crate) fn set_upstream(&self, addr: SocketAddr) {
        self.state().upstream = Some(addr.to_string());
    }

    /// What went wrong (the first error is kept).
    pub(crate) fn set_error(&self, error: &dyn Display) {
        let mut s = self.state();
        if s.error.is_none() {
            s.error = Some(error.to_string());
        }
    }

    /// The host, when this exchange is an intercepted one (the only kind that can carry a real
    /// secret value).
    pub(crate) fn intercepted_host(&self) -> Option<&str> {
        (self.mode == Mode::Intercept).then_some(self.host.as_str())
    }

    /// Turns this exchange into a refusal under `rule` (the guard refused the address only
    /// when the connection was made).
    pub(crate) fn deny(&self, rule: String) {
        let mut s = self.state();
        s.decision = Decision::Deny;
        s.rule = rule;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let state = self.state();
        let bits = self.secrets.load(Ordering::Relaxed);
        let secrets = self
            .ctx
            .secret_names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 64 && bits & (1 << i) != 0)
            .map(|(_, n)| n.clone())
            .collect();
        let entry = AuditEntry {
            time: now_rfc3339(),
            bottle: self.ctx.bottle.clone(),
            mode: self.mode,
            method: self.method.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            decision: state.decision,
            rule: state.rule.clone(),
            status: self.status.load(Ordering::Relaxed),
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            duration_ms: self.start.elapsed().as_millis() as u64,
            secrets,
            upstream: state.upstream.clone(),
            error: state.error.clone(),
        };
        drop(state);
        self.ctx.log.record(&entry);
    }
}
