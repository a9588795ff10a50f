//! Reading a database URL: which backend, what to connect to, and what to show in messages.

use std::path::Path;

use crate::{Backend, StoreError};

/// A parsed database URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// What the driver gets: for a SQLite file, `mode=rwc` added so a missing file is created.
    pub(crate) connect_url: String,
    /// For messages and logs: the URL without its password.
    pub(crate) display: String,
    /// A SQLite in-memory database (lives only as long as one connection does).
    pub(crate) in_memory: bool,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (database, params) = match rest.split_once('?') {
                Some((d, p)) => (d, Some(p)),
                None => (rest, None),
            };
            let has_mode = params.is_some_and(|p| p.split('&').any(|kv| kv.starts_with("mode=")));
            let in_memory = database == ":memory:"
                || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
            if database.is_empty() && !in_memory {
                return Err(StoreError::UnsupportedUrl {
                    url: url.to_owned(),
                });
            }
            let connect_url = match (in_memory || has_mode, params) {
                (true, _) => url.to_owned(),
                (false, Some(_)) => format!("{url}&mode=rwc"),
                (false, None) => format!("{url}?mode=rwc"),
            };
            return Ok(Target {
                backend: Backend::Sqlite,
                connect_url,
                display: url.to_owned(),
                in_memory,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target {
                backend: Backend::Postgres,
                connect_url: url.to_owned(),
                display: redact(url),
                in_memory: false,
            });
        }
        Err(StoreError::UnsupportedUrl { url: redact(url) })
    }
}

/// Removes the password from `scheme://user:password@host/...` and from a `password=` query
/// parameter, so URLs can go into messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = authority_start + colon + 1;
                out.replace_range(start..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (base, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// The `sqlite:` URL of a database file, with the characters a URL would misread (`%`, `?`,
/// `#`) escaped. A path that is not UTF-8 is converted lossily (SQLite URLs are text).
pub fn sqlite_url(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut url = String::with_capacity(text.len() + 7);
    url.push_str("sqlite:");
    for c in text.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_file_gets_create_mode() {
        let t = Target::parse("sqlite:/tmp/x.db").unwrap();
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(t.connect_url, "sqlite:/tmp/x.db?mode=rwc");
        assert!(!t.in_memory);
        let t = Target::parse("sqlite:///tmp/x.db?cache=private").unwrap();
        assert_eq!(t.connect_url, "sqlite:///tmp/x.db?cache=private&mode=rwc");
        let t = Target::parse("sqlite:/tmp/x.db?mode=ro").unwrap();
        assert_eq!(t.connect_url, "sqlite:/tmp/x.db?mode=ro");
    }

    #[test]
    fn sqlite_memory_is_left_alone() {
        let t = Target::parse("sqlite::memory:").unwrap();
        assert!(t.in_memory);
        assert_eq!(t.connect_url, "sqlite::memory:");
    }

    #[test]
    fn postgres_password_is_hidden() {
        let t = Target::parse("postgres://bob:s3cret@db.example/app?sslmode=disable").unwrap();
        assert_eq!(t.backend, Backend::Postgres);
        assert_eq!(
            t.display,
            "postgres://bob:***@db.example/app?sslmode=disable"
        );
        assert!(t.connect_url.contains("s3cret"));
        assert_eq!(
            redact("postgres://bob@/app?host=/tmp/s&password=hunter2"),
            "postgres://bob@/app?host=/tmp/s&password=***"
        );
    }

    #[test]
    fn unknown_scheme_is_refused_without_password() {
        let err = Target::parse("mysql://root:pw@host/db").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unsupported database URL"), "{msg}");
        assert!(!msg.contains("pw@"), "{msg}");
        assert!(Target::parse("sqlite:").is_err());
    }

    #[test]
    fn sqlite_url_escapes_url_characters() {
        assert_eq!(
            sqlite_url(Path::new("/data/a?b#c%d.db")),
            "sqlite:/data/a%3Fb%23c%25d.db"
        );
    }
}
