//! Schema migrations, compiled in.
//!
//! Each step has one file per backend with the same version:
//! `migrations/sqlite/NNNN_name.sql` and `migrations/postgres/NNNN_name.sql`. To add tables
//! (the agent's tasks, messages and queue, say), write both files with the next number and add
//! one line to [`STEPS`]; a test checks that the folders and this list agree. Never edit a
//! step that has shipped: the migrator keeps each applied step's checksum and refuses to run
//! against a database whose history differs.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::Backend;

struct Step {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        version: 1,
        description: "gateway",
        sqlite: include_str!("../migrations/sqlite/0001_gateway.sql"),
        postgres: include_str!("../migrations/postgres/0001_gateway.sql"),
    },
    Step {
        version: 2,
        description: "agent",
        sqlite: include_str!("../migrations/sqlite/0002_agent.sql"),
        postgres: include_str!("../migrations/postgres/0002_agent.sql"),
    },
    Step {
        version: 3,
        description: "nonces_by_time",
        sqlite: include_str!("../migrations/sqlite/0003_nonces_by_time.sql"),
        postgres: include_str!("../migrations/postgres/0003_nonces_by_time.sql"),
    },
];

/// The migrator for one backend: every step, each run in its own transaction.
pub(crate) fn migrator(backend: Backend) -> Migrator {
    let migrations = STEPS
        .iter()
        .map(|step| {
            let sql = match backend {
                Backend::Sqlite => step.sqlite,
                Backend::Postgres => step.postgres,
            };
            Migration::new(
                step.version,
                Cow::Borrowed(step.description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn files(dir: &str) -> BTreeSet<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn folders_and_steps_agree() {
        let sqlite = files("sqlite");
        let postgres = files("postgres");
        assert_eq!(
            sqlite, postgres,
            "every step needs a file for both backends"
        );
        let listed: BTreeSet<String> = STEPS
            .iter()
            .map(|s| format!("{:04}_{}.sql", s.version, s.description))
            .collect();
        assert_eq!(listed, sqlite, "STEPS must list every file in migrations/");
        let versions: Vec<i64> = STEPS.iter().map(|s| s.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions must increase");
    }
}
