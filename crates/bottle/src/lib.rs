//! The bottle: runs untrusted commands in a bubblewrap sandbox whose only way out is an
//! in-process egress proxy that enforces host lists, holds the real secrets and writes one
//! audit line per request; every run ends with a signed provenance record.
//!
//! Map: `policy` (the policy file), `proxy` + `audit` (egress), `sandbox` (backend trait,
//! bwrap, seccomp, the in-sandbox bridge), `provenance` (in-toto statement in a DSSE
//! envelope, ed25519). The `bytebot bottle` commands in the cli crate wire them together.

pub mod audit;
pub mod ca;
pub mod policy;
pub mod provenance;
pub mod proxy;
pub mod sandbox;
