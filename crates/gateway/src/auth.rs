//! Who is calling: bearer tokens (hashed at rest) and HMAC-signed requests
//! with timestamp and nonce (replay protection that survives restart through
//! the store). Every comparison of secrets is constant-time.

use crate::config::{GatewayConfig, KeyConfig, LOCAL_KEY_ID};
use bytebot_store::{Backend, PendingWrite, Store};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A caller the gateway has recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key id.
    pub key_id: String,
    /// The policy profile it acts under.
    pub profile: String,
    /// How it proved who it is (for the audit log).
    pub method: AuthMethod,
}

/// The durable record of a signed request's nonce, possibly still being committed.
///
/// On SQLite one gateway owns the file and its in-memory nonce cache (warmed from the store at
/// start) already decides replays, so the store write only has to be durable before the
/// response goes out: the handler runs while it commits, and the middleware calls
/// [`NonceReceipt::confirm`] before answering. On PostgreSQL several gateways may share the
/// store, which is then the authority, so the nonce is committed before the handler runs.
#[derive(Debug, Default)]
#[must_use = "confirm the receipt before answering, or the nonce may not survive a crash"]
pub struct NonceReceipt(Option<(PendingWrite, String)>);

impl NonceReceipt {
    /// Waits until the nonce is committed.
    pub async fn confirm(self) -> Result<(), AuthError> {
        let Some((pending, nonce)) = self.0 else {
            return Ok(());
        };
        match pending.committed().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::Replay(nonce)),
            Err(e) => Err(AuthError::Store(e.to_string())),
        }
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer`.
    Bearer,
    /// `X-BYTEBOT-SIG` over method, path, timestamp, nonce and body.
    Signature,
    /// The draft's body-only signature (config `legacy_body_signature`).
    LegacyBodySignature,
    /// The `bytebot_token` cookie of the web UI.
    Cookie,
}

impl AuthMethod {
    /// Name for logs and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Bearer => "bearer",
            AuthMethod::Signature => "signature",
            AuthMethod::LegacyBodySignature => "legacy_body_signature",
            AuthMethod::Cookie => "cookie",
        }
    }
}

/// Why a request was refused; every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error(
        "missing credentials: send Authorization: Bearer <token>, or sign the request with X-BYTEBOT-KEY-ID, X-BYTEBOT-TIMESTAMP, X-BYTEBOT-NONCE and X-BYTEBOT-SIG"
    )]
    Missing,
    /// A bearer token that matches no key.
    #[error("the bearer token is not valid")]
    BadToken,
    /// The key id is not configured (or has no HMAC secret).
    #[error("unknown key id \"{0}\" (or it has no signing secret configured)")]
    UnknownKey(String),
    /// A signing header is missing or malformed.
    #[error("{0}")]
    BadHeader(String),
    /// Timestamp outside the allowed window.
    #[error(
        "timestamp {ts} is {skew} s away from the server clock; the allowed window is ±{window} s (check the caller's clock)"
    )]
    Stale {
        /// The timestamp sent.
        ts: i64,
        /// Its distance from now, in seconds.
        skew: i64,
        /// The window.
        window: u64,
    },
    /// The signature does not match.
    #[error(
        "bad signature: X-BYTEBOT-SIG must be hex HMAC-SHA256 of \"v1\\n\" + timestamp + \"\\n\" + nonce + \"\\n\" + METHOD + \"\\n\" + path_and_query + \"\\n\" + body"
    )]
    BadSignature,
    /// A nonce this key used before.
    #[error("replayed request: nonce \"{0}\" was already used by this key; send a fresh nonce")]
    Replay(String),
    /// The nonce store failed; we refuse rather than risk a replay.
    #[error("cannot record the nonce ({0}); try again")]
    Store(String),
}

impl AuthError {
    /// Short machine-readable reason, for metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::BadToken => "bad_token",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::BadHeader(_) => "bad_header",
            AuthError::Stale { .. } => "stale_timestamp",
            AuthError::BadSignature => "bad_signature",
            AuthError::Replay(_) => "replayed_nonce",
            AuthError::Store(_) => "nonce_store",
        }
    }
}

struct Key {
    id: String,
    profile: String,
    token_hash: Option<[u8; 32]>,
    secret: Option<Vec<u8>>,
    legacy: bool,
}

/// The headers of a signed request.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    /// `X-BYTEBOT-KEY-ID`.
    pub key_id: Option<&'a str>,
    /// `X-BYTEBOT-TIMESTAMP`.
    pub timestamp: Option<&'a str>,
    /// `X-BYTEBOT-NONCE`.
    pub nonce: Option<&'a str>,
    /// `X-BYTEBOT-SIG`.
    pub signature: Option<&'a str>,
}

/// The configured keys plus the nonce cache.
pub struct Authenticator {
    keys: Vec<Key>,
    window: u64,
    /// Nonces seen within the window, per key: the store has them too, so a
    /// restart does not open a replay hole; this map answers without a query.
    nonces: Mutex<HashMap<(String, String), i64>>,
    store: Store,
}

/// Resolves the keys' secrets from the environment or files.
fn load_secret(key: &KeyConfig) -> Result<Option<Vec<u8>>, String> {
    if let Some(var) = &key.secret_env {
        let value = std::env::var(var).map_err(|_| {
            format!(
                "gateway.keys: key \"{}\": environment variable {var} (secret_env) is not set",
                key.id
            )
        })?;
        return non_empty(key, value.into_bytes());
    }
    if let Some(path) = &key.secret_file {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "gateway.keys: key \"{}\": cannot read secret_file {}: {e}",
                key.id,
                path.display()
            )
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "gateway.keys: key \"{}\": secret_file {} is readable by group or others; chmod 600 it",
                key.id,
                path.display()
            ));
        }
        let mut bytes = std::fs::read(path).map_err(|e| {
            format!(
                "gateway.keys: key \"{}\": cannot read secret_file {}: {e}",
                key.id,
                path.display()
            )
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return non_empty(key, bytes);
    }
    Ok(None)
}

fn non_empty(key: &KeyConfig, secret: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    if secret.len() < 16 {
        return Err(format!(
            "gateway.keys: key \"{}\": the HMAC secret must be at least 16 bytes",
            key.id
        ));
    }
    Ok(Some(secret))
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hex HMAC-SHA256 of `message` under `secret` (what a client sends).
pub fn sign_hex(secret: &[u8], message: &[u8]) -> String {
    hex::encode(hmac_bytes(secret, message))
}

fn hmac_bytes(secret: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail here.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The string a v1 signature covers.
pub fn signing_string(timestamp: &str, nonce: &str, method: &str, path_and_query: &str) -> String {
    format!("v1\n{timestamp}\n{nonce}\n{method}\n{path_and_query}\n")
}

impl Authenticator {
    /// Builds the key table: the main token as key `local` plus the
    /// configured keys. Errors name the key and what to fix.
    pub async fn new(
        config: &GatewayConfig,
        main_token: &str,
        store: Store,
    ) -> Result<Self, String> {
        let mut keys = vec![Key {
            id: LOCAL_KEY_ID.into(),
            profile: config.local_profile.clone(),
            token_hash: Some(token_hash(main_token)),
            secret: Some(main_token.as_bytes().to_vec()),
            legacy: false,
        }];
        for k in &config.keys {
            let token_hash = match &k.token_sha256 {
                Some(h) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).map_err(|e| {
                        format!("gateway.keys: key \"{}\": token_sha256: {e}", k.id)
                    })?;
                    Some(out)
                }
                None => None,
            };
            keys.push(Key {
                id: k.id.clone(),
                profile: k.profile.clone(),
                token_hash,
                secret: load_secret(k)?,
                legacy: k.legacy_body_signature,
            });
        }
        let auth = Self {
            keys,
            window: config.clock_skew_s,
            nonces: Mutex::new(HashMap::new()),
            store,
        };
        auth.warm_nonces().await?;
        Ok(auth)
    }

    /// Key ids and their profiles (to check them against the policy at start).
    pub fn profiles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys
            .iter()
            .map(|k| (k.id.as_str(), k.profile.as_str()))
    }

    async fn warm_nonces(&self) -> Result<(), String> {
        let since = now_s() - 2 * self.window as i64;
        let rows = self
            .store
            .nonces_since(since)
            .await
            .map_err(|e| format!("store: cannot load recent nonces: {e}"))?;
        let mut map = self.nonces.lock().map_err(|_| "nonce cache poisoned")?;
        for r in rows {
            map.insert((r.key_id, r.nonce), r.ts);
        }
        Ok(())
    }

    /// A bearer token (or the web UI cookie's value).
    pub fn bearer(&self, token: &str, method: AuthMethod) -> Result<Caller, AuthError> {
        let presented = token_hash(token);
        // Check every key so the time taken does not tell which one matched.
        let mut found: Option<&Key> = None;
        for key in &self.keys {
            if let Some(h) = &key.token_hash
                && bool::from(h.ct_eq(&presented))
            {
                found = Some(key);
            }
        }
        found.map(|k| caller(k, method)).ok_or(AuthError::BadToken)
    }

    /// A signed request: verifies the signature, the timestamp window and the
    /// nonce, and starts recording the nonce durably (see [`NonceReceipt`]).
    pub async fn signed(
        &self,
        h: SignedHeaders<'_>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(Caller, NonceReceipt), AuthError> {
        let signature = h
            .signature
            .ok_or_else(|| AuthError::BadHeader("X-BYTEBOT-SIG is missing".into()))?;
        let sig = hex::decode(signature.trim()).map_err(|_| {
            AuthError::BadHeader("X-BYTEBOT-SIG must be 64 lowercase hex digits".into())
        })?;
        if h.timestamp.is_none() && h.nonce.is_none() {
            return Ok((self.legacy(h.key_id, &sig, body)?, NonceReceipt::default()));
        }
        let key_id = h
            .key_id
            .ok_or_else(|| AuthError::BadHeader("X-BYTEBOT-KEY-ID is missing".into()))?;
        let ts_text = h
            .timestamp
            .ok_or_else(|| AuthError::BadHeader("X-BYTEBOT-TIMESTAMP is missing".into()))?;
        let nonce = h
            .nonce
            .ok_or_else(|| AuthError::BadHeader("X-BYTEBOT-NONCE is missing".into()))?;
        let ts: i64 = ts_text.parse().map_err(|_| {
            AuthError::BadHeader(format!(
                "X-BYTEBOT-TIMESTAMP \"{ts_text}\" is not unix seconds"
            ))
        })?;
        if !(8..=128).contains(&nonce.len())
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthError::BadHeader(
                "X-BYTEBOT-NONCE must be 8-128 characters of A-Z a-z 0-9 - _ (a random value per request)".into(),
            ));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id && k.secret.is_some())
            .ok_or_else(|| AuthError::UnknownKey(key_id.into()))?;
        let now = now_s();
        // Saturating: a timestamp near i64::MIN must be refused, not overflow.
        let skew = ts.saturating_sub(now);
        if skew.unsigned_abs() > self.window {
            return Err(AuthError::Stale {
                ts,
                skew,
                window: self.window,
            });
        }
        let secret = key.secret.as_deref().unwrap_or_default();
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
        mac.update(signing_string(ts_text, nonce, method, path_and_query).as_bytes());
        mac.update(body);
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        // Only a verified request may spend a nonce, so strangers cannot fill the cache.
        let receipt = self.spend_nonce(&key.id, nonce, ts).await?;
        Ok((caller(key, AuthMethod::Signature), receipt))
    }

    fn legacy(&self, key_id: Option<&str>, sig: &[u8], body: &[u8]) -> Result<Caller, AuthError> {
        let mut found: Option<&Key> = None;
        for key in self.keys.iter().filter(|k| k.legacy) {
            if key_id.is_some_and(|id| id != key.id) {
                continue;
            }
            let expected = hmac_bytes(key.secret.as_deref().unwrap_or_default(), body);
            if bool::from(expected.as_slice().ct_eq(sig)) {
                found = Some(key);
            }
        }
        found
            .map(|k| caller(k, AuthMethod::LegacyBodySignature))
            .ok_or(AuthError::BadHeader(
                "X-BYTEBOT-TIMESTAMP and X-BYTEBOT-NONCE are missing (body-only signatures are accepted only for keys with legacy_body_signature = true)".into(),
            ))
    }

    async fn spend_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        ts: i64,
    ) -> Result<NonceReceipt, AuthError> {
        {
            let mut map = self
                .nonces
                .lock()
                .map_err(|_| AuthError::Store("nonce cache poisoned".into()))?;
            let entry = (key_id.to_string(), nonce.to_string());
            if map.contains_key(&entry) {
                return Err(AuthError::Replay(nonce.into()));
            }
            map.insert(entry, ts);
        }
        let recorded = if self.store.backend() == Backend::Sqlite {
            match self.store.queue_nonce(key_id, nonce, ts).await {
                Ok(pending) => return Ok(NonceReceipt(Some((pending, nonce.to_string())))),
                Err(e) => Err(e),
            }
        } else {
            self.store.insert_nonce(key_id, nonce, ts).await
        };
        match recorded {
            Ok(true) => Ok(NonceReceipt::default()),
            Ok(false) => Err(AuthError::Replay(nonce.into())),
            Err(e) => {
                if let Ok(mut map) = self.nonces.lock() {
                    map.remove(&(key_id.to_string(), nonce.to_string()));
                }
                Err(AuthError::Store(e.to_string()))
            }
        }
    }

    /// Forgets nonces older than twice the window, in memory and in the store.
    pub async fn prune(&self) {
        let before = now_s() - 2 * self.window as i64;
        if let Ok(mut map) = self.nonces.lock() {
            map.retain(|_, ts| *ts >= before);
        }
        if let Err(e) = self.store.prune_nonces(before).await {
            tracing::warn!(error = %e, "could not prune old nonces");
        }
    }
}

fn caller(key: &Key, method: AuthMethod) -> Caller {
    Caller {
        key_id: key.id.clone(),
        profile: key.profile.clone(),
        method,
    }
}

/// Now, in unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_string_matches_the_spec() {
        assert_eq!(
            signing_string("1700000000", "abcdefgh", "POST", "/plan?x=1"),
            "v1\n1700000000\nabcdefgh\nPOST\n/plan?x=1\n"
        );
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
