//! The egress audit: one JSON line per proxied request, and the per-run summary that goes into
//! the provenance record.

use serde::{Deserialize, Serialize};

/// What one bottle run did on the network, as the proxy saw it. Produced by the proxy at the end
/// of a run and embedded in the provenance predicate; it names secrets, never their values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSummary {
    /// Each host the run was allowed to reach, with its traffic.
    pub hosts: Vec<HostTraffic>,
    /// Requests the policy refused, grouped by host and rule.
    pub denied: Vec<DeniedAttempts>,
    /// Names of the secrets injected into at least one request.
    pub secrets_used: Vec<String>,
}

/// Traffic to one allowed host during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTraffic {
    /// Host name as the sandbox asked for it.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Requests (or tunnels) made.
    pub requests: u64,
    /// Bytes sent from the sandbox toward the host.
    pub bytes_up: u64,
    /// Bytes received from the host into the sandbox.
    pub bytes_down: u64,
}

/// Refused attempts toward one host under one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedAttempts {
    /// Host name (or address) the sandbox asked for.
    pub host: String,
    /// The rule that refused it, as written in the audit line.
    pub rule: String,
    /// How many times.
    pub count: u64,
}
