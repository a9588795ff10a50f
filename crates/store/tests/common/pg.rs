//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` package.
//!
//! [`PgServer::start`] runs `initdb` into a fresh temporary folder, starts the server with
//! `pg_ctl` listening only on a unix socket in that folder (no TCP, so parallel tests never
//! collide), and [`PgServer::create_database`] hands out a database URL per test. Dropping the
//! server stops it and deletes the folder. PostgreSQL refuses to run as root, so as root every
//! command runs as the `postgres` system user (which the Debian package creates) through
//! `runuser`; no sudo.
//!
//! Only the standard library and `tempfile`: other crates' tests can copy this file as is.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running throwaway server; stopped and deleted on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Some("postgres") when we are root and must drop to that user.
    run_as: Option<&'static str>,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl PgServer {
    /// Starts a server. `Err(reason)` means the host cannot run one (PostgreSQL not
    /// installed): print it and skip. Anything else that goes wrong panics with the output.
    pub fn start() -> Result<PgServer, String> {
        let bin = find_bin_dir().ok_or_else(|| {
            "skipped: install postgresql (Debian: apt-get install -y postgresql) to run the PostgreSQL tests"
                .to_owned()
        })?;
        let run_as = if is_root() { Some("postgres") } else { None };
        // A short path under /tmp: unix socket paths are limited to ~107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir_in("/tmp")
            .expect("create a temporary folder for PostgreSQL in /tmp");
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user).ok_or_else(|| {
                format!(
                    "skipped: running as root but there is no `{user}` user to run PostgreSQL as \
                     (the Debian postgresql package creates it)"
                )
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the PostgreSQL folder to the postgres user");
        }
        let port = free_port();
        let server = PgServer {
            dir,
            bin,
            port,
            run_as,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        );
        // pg_ctl hands -o to the server through a shell; the folder name is ours (letters,
        // digits, '-', '/'), never input.
        let server_options = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=off",
            server.socket_dir().display(),
            port
        );
        let log = server.dir.path().join("server.log");
        server.run(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("120"),
                OsStr::new("-o"),
                OsStr::new(&server_options),
                OsStr::new("start"),
            ],
        );
        Ok(server)
    }

    /// Creates a new, empty database and returns its URL (unix socket, user `postgres`).
    pub fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.port.to_string();
        self.run(
            "createdb",
            [
                OsStr::new("-h"),
                self.socket_dir().as_os_str(),
                OsStr::new("-p"),
                OsStr::new(&port),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new(&name),
            ],
        );
        self.url(&name)
    }

    /// The URL of database `name` on this server. sqlx refuses an empty host
    /// (`postgres://postgres@/db`), so the URL names `localhost` and the `host` parameter, a
    /// socket folder, takes precedence.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// The folder holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs (as the postgres user when we are root) and panics
    /// with its output and the server log if it fails.
    fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // The postgres user may not be allowed into the caller's working folder.
        command.args(args).current_dir(self.dir.path());
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // Immediate: nothing here needs a clean shutdown, and the folder is deleted next.
        let _ = command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // The effective uid (second number of "Uid:") without needing libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// (uid, gid) of a local user, from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == user {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// A port nobody listens on right now. With `listen_addresses=''` the port only names the
/// socket file in our own folder, so even a reused number cannot collide.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to pick a port")
}
