//! The blob store: bytes the database rows only point to (screenshots, uploads, files the
//! agent made), on a local folder, an S3-compatible server, or in memory, through the
//! `object_store` crate.
//!
//! Keys are relative paths of `/`-separated parts made of ASCII letters, digits and `-_.=+@,`
//! (no `.` or `..` part, no empty part): the same key then works on a disk and on S3, and can
//! never leave the store's folder or prefix. The agent keeps a task's blobs under
//! [`task_blob_prefix`], so deleting a task can end with one [`Blobs::delete_prefix`].

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Longest accepted key, in bytes (S3 allows 1,024).
const MAX_KEY_LEN: usize = 1024;

/// What a blob call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The location given to [`Blobs::open`] cannot be used.
    #[error("blobs: cannot use {target:?}: {reason}")]
    Open {
        /// The location as given.
        target: String,
        /// What was wrong and what to do.
        reason: String,
    },

    /// A key (or prefix) is not one the store accepts.
    #[error(
        "blobs: key {key:?} {why}; use relative paths of parts made of letters, digits and -_.=+@, separated by /"
    )]
    BadKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// No blob has that key.
    #[error("blobs: no blob has the key {key:?} (it was never stored, or was deleted)")]
    NotFound {
        /// The key.
        key: String,
    },

    /// The backend failed.
    #[error("blobs: {op} of {key:?} in {target} failed: {source}")]
    Backend {
        /// `put`, `get`, `delete` or `delete_prefix`.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// Where the blobs are.
        target: String,
        /// The backend's error (boxed: it is large, and this path is rare).
        #[source]
        source: Box<object_store::Error>,
    },
}

/// Checks that `key` is a valid blob key (see the module documentation).
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let bad = |why| {
        Err(BlobError::BadKey {
            key: key.to_owned(),
            why,
        })
    };
    if key.is_empty() {
        return bad("is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("is an absolute path");
    }
    for part in key.split('/') {
        if part.is_empty() {
            return bad("has an empty part (// or a / at the end)");
        }
        if part == "." || part == ".." {
            return bad("has a . or .. part");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=+@,".contains(&b))
        {
            return bad("has a character other than letters, digits and -_.=+@,");
        }
    }
    Ok(())
}

/// Where a task's blobs go: `tasks/<task id>`; put them under `tasks/<task id>/…`.
pub fn task_blob_prefix(task_id: &str) -> String {
    format!("tasks/{task_id}")
}

fn path_of(key: &str) -> Result<Path, BlobError> {
    check_key(key)?;
    Path::parse(key).map_err(|_| BlobError::BadKey {
        key: key.to_owned(),
        why: "is not a valid object path",
    })
}

/// A blob store. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    target: String,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Blobs {
    /// Opens a blob store:
    ///
    /// - a path or a `file:///absolute/path` URL: a local folder, created if missing;
    /// - `s3://bucket` or `s3://bucket/prefix`: S3 or an S3-compatible server, configured from
    ///   the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and
    ///   `AWS_ENDPOINT_URL` for servers like MinIO; plain `http://` endpoints are allowed);
    /// - `memory:`: in memory, gone when the last clone is dropped (for tests).
    ///
    /// Nothing is contacted yet: a wrong S3 setting shows at the first call.
    pub fn open(url_or_path: &str) -> Result<Blobs, BlobError> {
        let target = url_or_path.trim();
        let open_error = |reason: String| BlobError::Open {
            target: target.to_owned(),
            reason,
        };
        if target == "memory:" {
            return Ok(Blobs {
                store: Arc::new(InMemory::new()),
                target: "memory:".to_owned(),
            });
        }
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(open_error(
                    "the URL names no bucket; write s3://bucket or s3://bucket/prefix".to_owned(),
                ));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let http_endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
                .iter()
                .filter_map(|name| std::env::var(name).ok())
                .any(|url| url.starts_with("http://"));
            if http_endpoint {
                builder = builder.with_allow_http(true);
            }
            let s3 = builder.build().map_err(|e| {
                open_error(format!(
                    "{e} (check AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL)"
                ))
            })?;
            let prefix = prefix.trim_end_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, path_of(prefix)?))
            };
            return Ok(Blobs {
                store,
                target: target.to_owned(),
            });
        }
        let dir = match target.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => {
                return Err(open_error(
                    "a file URL needs an absolute path: file:///var/lib/bytebot/blobs".to_owned(),
                ));
            }
            None if target.contains("://") => {
                return Err(open_error(
                    "unknown scheme; use a folder path, file:///path, s3://bucket/prefix or memory:"
                        .to_owned(),
                ));
            }
            None if target.is_empty() => {
                return Err(open_error("no location given; name a folder".to_owned()));
            }
            None => target,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            open_error(format!(
                "cannot create the folder: {e} (check that its parent exists and is writable)"
            ))
        })?;
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| open_error(format!("cannot use the folder: {e}")))?
            // Deleting a task's last blob removes its then-empty folders too.
            .with_automatic_cleanup(true);
        Ok(Blobs {
            store: Arc::new(local),
            target: target.to_owned(),
        })
    }

    /// Where the blobs are, as given to [`Blobs::open`].
    pub fn target(&self) -> &str {
        &self.target
    }

    fn backend_error(&self, op: &'static str, key: &str, source: object_store::Error) -> BlobError {
        match source {
            object_store::Error::NotFound { .. } => BlobError::NotFound {
                key: key.to_owned(),
            },
            source => BlobError::Backend {
                op,
                key: key.to_owned(),
                target: self.target.clone(),
                source: Box::new(source),
            },
        }
    }

    /// Stores `bytes` under `key` (replacing what was there) and returns the key. On a local
    /// folder the file appears whole or not at all.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
        let path = path_of(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.backend_error("put", key, e))?;
        Ok(key.to_owned())
    }

    /// The bytes under `key`; [`BlobError::NotFound`] when there are none.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let path = path_of(key)?;
        let found = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.backend_error("get", key, e))?;
        let bytes = found
            .bytes()
            .await
            .map_err(|e| self.backend_error("get", key, e))?;
        Ok(Vec::from(bytes))
    }

    /// Deletes the blob under `key`; deleting one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = path_of(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend_error("delete", key, e)),
        }
    }

    /// Deletes every blob whose key is `prefix` or starts with `prefix/` (whole parts: `a/b`
    /// covers `a/b/c`, not `a/bc`) and returns how many it deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let trimmed = prefix.trim_end_matches('/');
        let path = path_of(trimmed)?;
        let listed: Vec<Path> = self
            .store
            .list(Some(&path))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.backend_error("delete_prefix", prefix, e))?;
        let count = listed.len();
        let locations = futures_util::stream::iter(listed.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(done) = deleted.next().await {
            match done {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.backend_error("delete_prefix", prefix, e)),
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for ok in ["a", "tasks/0190-ab/files/x.png", "a=b+c@d,e_f-g.h"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "is empty"),
            ("/etc/passwd", "absolute"),
            ("a/../b", ". or .."),
            ("..", ". or .."),
            ("a/./b", ". or .."),
            ("a//b", "empty part"),
            ("a/", "empty part"),
            ("a\\b", "character"),
            ("a b", "character"),
            ("ä", "character"),
            ("a\nb", "character"),
        ] {
            let e = check_key(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_key(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn locations_are_checked() {
        for (bad, says) in [
            ("s3://", "names no bucket"),
            ("ftp://host/x", "unknown scheme"),
            ("file://relative/x", "absolute path"),
            ("", "no location"),
        ] {
            let e = Blobs::open(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    /// Opening an S3 location only builds the client (no S3 server here to talk to).
    #[test]
    fn s3_locations_open_without_contacting_anything() {
        let blobs = Blobs::open("s3://bytebot-test/some/prefix").unwrap();
        assert_eq!(blobs.target(), "s3://bytebot-test/some/prefix");
        assert!(Blobs::open("s3://bytebot-test/../x").is_err());
    }
}
