//! Artifacts: bytes a task produced (screenshots, output), kept as files
//! under the data folder, described in the store, and reachable through
//! signed links that expire so a chat UI can show an image inline without
//! holding a key.

use crate::auth::sign_hex;
use bytebot_store::{ArtifactRow, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// An artifact as results list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactRef {
    /// Artifact id.
    pub id: String,
    /// What it is: `screenshot`, `stdout`, `stderr`, `file`.
    pub kind: String,
    /// Content type.
    pub media_type: String,
    /// Signed link (path and query), valid until it expires.
    pub url: String,
    /// Size in bytes.
    pub bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match.
    BadSignature,
    /// The link is past its expiry.
    Expired,
}

/// Where artifacts live and how links are signed.
pub struct Artifacts {
    dir: PathBuf,
    link_key: Vec<u8>,
    ttl_s: u64,
    store: Store,
}

impl Artifacts {
    /// Artifacts under `dir`, links signed with `link_key`, valid `ttl_s`.
    pub fn new(dir: PathBuf, link_key: Vec<u8>, ttl_s: u64, store: Store) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            link_key,
            ttl_s,
            store,
        })
    }

    /// Stores `bytes` for a task; returns the reference with a fresh link.
    pub async fn put(
        &self,
        task_id: &str,
        key_id: &str,
        kind: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactRef, String> {
        let id = format!("a_{}", uuid::Uuid::now_v7().simple());
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let path = self.dir.join(&id);
        let len = bytes.len() as i64;
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| format!("cannot write artifact {}: {e}", path.display()))?;
        let row = ArtifactRow {
            id: id.clone(),
            task_id: task_id.to_string(),
            key_id: key_id.to_string(),
            kind: kind.to_string(),
            media_type: media_type.to_string(),
            bytes: len,
            sha256,
            path: path.display().to_string(),
            created_at: crate::auth::now_s(),
        };
        self.store
            .insert_artifact(&row)
            .await
            .map_err(|e| format!("cannot record artifact: {e}"))?;
        Ok(self.reference(&row))
    }

    /// A reference with a freshly signed link.
    pub fn reference(&self, row: &ArtifactRow) -> ArtifactRef {
        let exp = crate::auth::now_s() + self.ttl_s as i64;
        ArtifactRef {
            id: row.id.clone(),
            kind: row.kind.clone(),
            media_type: row.media_type.clone(),
            url: format!(
                "/artifacts/{}?exp={exp}&sig={}",
                row.id,
                self.sign(&row.id, exp)
            ),
            bytes: row.bytes,
            sha256: row.sha256.clone(),
        }
    }

    fn sign(&self, id: &str, exp: i64) -> String {
        sign_hex(&self.link_key, format!("artifact\n{id}\n{exp}").as_bytes())
    }

    /// Checks a link's signature and expiry.
    pub fn check_link(&self, id: &str, exp: i64, sig: &str) -> Result<(), LinkError> {
        let expected = self.sign(id, exp);
        if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
            return Err(LinkError::BadSignature);
        }
        if exp < crate::auth::now_s() {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    /// The stored row.
    pub async fn get(&self, id: &str) -> Result<Option<ArtifactRow>, StoreError> {
        self.store.get_artifact(id).await
    }

    /// A task's artifacts with fresh links.
    pub async fn of_task(&self, task_id: &str) -> Result<Vec<ArtifactRef>, StoreError> {
        let rows = self.store.task_artifacts(task_id).await?;
        Ok(rows.iter().map(|r| self.reference(r)).collect())
    }

    /// The folder they live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
