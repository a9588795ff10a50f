//! A database for one test on either backend: a SQLite file in a temporary folder, or a fresh
//! database on a throwaway PostgreSQL server (pg.rs), and what keeps it alive.

#![allow(dead_code)]

use bytebot_store::Backend;

use super::pg::PgServer;

/// A database for one test; dropping it deletes the folder or stops the server.
pub struct TestDb {
    /// The URL to open.
    pub url: String,
    /// Which backend it is.
    pub backend: Backend,
    _keep: Keep,
}

#[allow(dead_code)] // held only so it is dropped (folder deleted, server stopped) at the end
enum Keep {
    Dir(tempfile::TempDir),
    Pg(PgServer),
}

/// A SQLite file in a fresh temporary folder.
pub fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("create a temporary folder");
    let url = bytebot_store::sqlite_url(&dir.path().join("store.db"));
    TestDb {
        url,
        backend: Backend::Sqlite,
        _keep: Keep::Dir(dir),
    }
}

/// A fresh database on a server of its own; `None` (after printing why) when PostgreSQL is
/// not installed.
pub async fn postgres_db() -> Option<TestDb> {
    let started = tokio::task::spawn_blocking(|| {
        PgServer::start().map(|server| {
            let url = server.create_database();
            (server, url)
        })
    })
    .await
    .expect("the PostgreSQL start-up task panicked");
    match started {
        Ok((server, url)) => Some(TestDb {
            url,
            backend: Backend::Postgres,
            _keep: Keep::Pg(server),
        }),
        Err(reason) => {
            println!("{reason}");
            None
        }
    }
}
