//! Launching and focusing applications from the configured map
//! (`desktop.applications`): a running window is found by its `WM_CLASS`
//! and focused; otherwise the program is started directly (argv, never a
//! shell) in its own process group, so it outlives the request and is not
//! hit by signals meant for the daemon.

use crate::config::AppSpec;
use crate::desktop::Desktop;
use crate::error::DesktopError;
use crate::http::AppState;
use crate::http::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long we wait for a launched program's window before answering anyway
/// (slow programs still start; the agent's next screenshot shows them).
const WINDOW_WAIT: Duration = Duration::from_secs(5);

/// Focuses the named application's window if it has one, else launches it;
/// `desktop` minimises every window.
pub async fn open(
    desktop: &Arc<Desktop>,
    apps: &BTreeMap<String, AppSpec>,
    name: &str,
) -> Result<(), DesktopError> {
    open_with(desktop, apps, name, &[]).await
}

/// Like [`open`], with extra arguments (a URL for a browser): with any, the
/// program is always started, since only it knows how to hand them to a
/// running copy (a browser opens a new tab).
pub async fn open_with(
    desktop: &Arc<Desktop>,
    apps: &BTreeMap<String, AppSpec>,
    name: &str,
    extra: &[String],
) -> Result<(), DesktopError> {
    let found = lookup(apps, name);
    if found.is_none() && name.trim().eq_ignore_ascii_case("desktop") {
        return desktop.on_session(|s| s.show_desktop()).await;
    }
    let Some((key, spec)) = found else {
        let configured: Vec<&str> = apps.keys().map(String::as_str).collect();
        return Err(DesktopError::field(
            "application",
            format!(
                "unknown application \"{name}\"; configured: {} (desktop.applications); \"desktop\" minimises all windows",
                configured.join(", ")
            ),
        ));
    };
    let class = window_class(spec);
    if !extra.is_empty() {
        let exited = launch(desktop.display(), key, spec, extra)?;
        return wait_for_window(desktop, key, &class, exited).await;
    }
    if let Some(id) = find_window(desktop, &class).await? {
        tracing::debug!(
            application = key,
            window = id,
            "focusing the running application"
        );
        return desktop.on_session(move |s| s.focus_window(id)).await;
    }
    let exited = launch(desktop.display(), key, spec, &[])?;
    wait_for_window(desktop, key, &class, exited).await
}

/// The entry for `name`: exact, else ignoring case and surrounding spaces
/// (models write "Firefox").
fn lookup<'a>(apps: &'a BTreeMap<String, AppSpec>, name: &str) -> Option<(&'a str, &'a AppSpec)> {
    apps.get_key_value(name)
        .or_else(|| {
            apps.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name.trim()))
        })
        .map(|(k, v)| (k.as_str(), v))
}

/// The configured `window_class`, else the program's file name.
fn window_class(spec: &AppSpec) -> String {
    spec.window_class.clone().unwrap_or_else(|| {
        let program = spec.command.first().map(String::as_str).unwrap_or_default();
        program.rsplit('/').next().unwrap_or(program).to_string()
    })
}

/// Whether a window's `WM_CLASS` (instance or class) is `wanted`, ignoring case.
pub fn class_matches(class: &[String], wanted: &str) -> bool {
    class.iter().any(|c| c.eq_ignore_ascii_case(wanted))
}

/// The window to focus for `class`: the active one if it matches, else the
/// last listed.
async fn find_window(desktop: &Arc<Desktop>, class: &str) -> Result<Option<u32>, DesktopError> {
    let windows = desktop.on_session(|s| s.windows()).await?;
    let all: Vec<_> = windows
        .iter()
        .filter(|w| class_matches(&w.class, class))
        .collect();
    Ok(all.iter().find(|w| w.active).or(all.last()).map(|w| w.id))
}

/// Starts the program detached from the request; the receiver gets its exit
/// status, reaped in the background so it never lingers as a zombie.
fn launch(
    display: &str,
    key: &str,
    spec: &AppSpec,
    extra: &[String],
) -> Result<oneshot::Receiver<ExitStatus>, DesktopError> {
    let config_key = format!("desktop.applications.{key}.command");
    let Some((program, args)) = spec.command.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(DesktopError::Failed(format!(
            "cannot launch {key}: {config_key} is empty; give the program and its arguments"
        )));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .args(extra)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    // The daemon's own settings (the token among them) are none of the app's business.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("BYTEBOT_") {
            cmd.env_remove(var);
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        DesktopError::Failed(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cannot launch {key}: program \"{program}\" was not found on PATH; install it or fix {config_key}"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot launch {key}: program \"{program}\" is not executable; fix {config_key}")
            }
            _ => format!("cannot launch {key} (\"{program}\", from {config_key}): {e}"),
        })
    })?;
    tracing::info!(application = key, program = %program, pid = child.id(), "launched application");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = tx.send(status);
        }
    });
    Ok(rx)
}

/// Waits up to [`WINDOW_WAIT`] for the new window and focuses it; fails
/// only when the program quit with an error before showing one.
async fn wait_for_window(
    desktop: &Arc<Desktop>,
    key: &str,
    class: &str,
    mut exited: oneshot::Receiver<ExitStatus>,
) -> Result<(), DesktopError> {
    let deadline = Instant::now() + WINDOW_WAIT;
    loop {
        if let Some(id) = find_window(desktop, class).await? {
            return desktop.on_session(move |s| s.focus_window(id)).await;
        }
        if let Ok(status) = exited.try_recv()
            && !status.success()
        {
            return Err(DesktopError::Failed(format!(
                "{key} quit with {status} before showing a window; check desktop.applications.{key}.command"
            )));
        }
        if Instant::now() >= deadline {
            tracing::info!(
                application = key,
                class,
                "no window with this WM_CLASS yet; check desktop.applications.{key}.window_class if it never shows"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /v1/apps/open` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    name: String,
    #[serde(default)]
    args: Vec<String>,
}

/// Routes under `/v1/apps`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/apps/open", post(open_route))
}

async fn open_route(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let body: OpenBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_field(
            "body",
            format!("{e}; expected {{\"name\": \"firefox\", \"args\": [\"https://example.com\"]}}"),
        )
    })?;
    if body.args.len() > 32 || body.args.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        return Err(ApiError::bad_field(
            "args",
            "at most 32 arguments of at most 4096 bytes, without NUL",
        ));
    }
    open_with(
        &state.desktop,
        &state.config.applications,
        &body.name,
        &body.args,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec(cmd: &[&str], class: Option<&str>) -> AppSpec {
        AppSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            window_class: class.map(str::to_string),
        }
    }

    #[test]
    fn lookup_ignores_case_and_spaces() {
        let mut apps = BTreeMap::new();
        apps.insert(
            "firefox".to_string(),
            spec(&["firefox-esr"], Some("firefox")),
        );
        assert_eq!(lookup(&apps, "firefox").map(|(k, _)| k), Some("firefox"));
        assert_eq!(lookup(&apps, " Firefox ").map(|(k, _)| k), Some("firefox"));
        assert!(lookup(&apps, "chrome").is_none());
    }

    #[test]
    fn class_defaults_to_program_name() {
        assert_eq!(
            window_class(&spec(&["/usr/bin/xterm", "-e", "top"], None)),
            "xterm"
        );
        assert_eq!(window_class(&spec(&["code"], Some("Code"))), "Code");
        assert!(class_matches(
            &["xmessage".into(), "Xmessage".into()],
            "XMESSAGE"
        ));
        assert!(!class_matches(&["xterm".into()], "xmessage"));
    }

    #[tokio::test]
    async fn missing_program_names_the_config_key() {
        let e = launch(
            ":0",
            "ghost",
            &spec(&["/nonexistent/bytebot-ghost"], None),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("desktop.applications.ghost.command") && e.contains("bytebot-ghost"),
            "{e}"
        );
        let e = launch(":0", "empty", &spec(&[], None), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("desktop.applications.empty.command"), "{e}");
    }
}
