//! A worker drives one desktop: it claims the next task from the queue (with a lease it keeps
//! renewing), runs it, and repeats. Several desktops mean several workers; the queue hands
//! each task to exactly one of them, and a task whose worker died is taken over by another
//! once the lease runs out.

use std::sync::Arc;
use std::time::Duration;

use bytebot_protocol::Control;
use tokio::sync::watch;

use crate::desktop::DesktopClient;
use crate::runner::{Outcome, Run};
use crate::service::Agent;

/// How long an idle worker waits before looking at the queue again (scheduled tasks come due
/// and leases expire without anyone saying so).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A task taken this many times without finishing (its workers keep dying or losing it) is
/// failed instead of being handed to yet another worker.
const MAX_ATTEMPTS: i64 = 5;

/// Claims and runs tasks on `desktop` until `shutdown` turns true.
pub async fn work(
    agent: Arc<Agent>,
    desktop: DesktopClient,
    worker: String,
    desktop_name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease = Duration::from_secs(agent.config.lease_s.max(3));
    tracing::info!(worker = %worker, desktop = %desktop_name, "agent worker started");
    while !*shutdown.borrow() {
        let claimed = agent
            .store
            .claim_agent_task(&worker, &desktop_name, lease)
            .await;
        let task = match claimed {
            Ok(Some(task)) => task,
            Ok(None) => {
                tokio::select! {
                    () = agent.queued.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(worker = %worker, error = %e, "cannot claim a task; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let id = task.id.clone();
        tracing::info!(worker = %worker, task = %id, attempt = task.attempts, "task claimed");
        if task.attempts > MAX_ATTEMPTS {
            let why = format!(
                "the task was taken {} times without finishing (its worker crashed or lost it each time); look at its last steps before running it again",
                task.attempts - 1
            );
            if let Err(e) = agent
                .finish(
                    &id,
                    &worker,
                    bytebot_protocol::TaskStatus::Failed,
                    None,
                    Some(why),
                )
                .await
            {
                tracing::warn!(task = %id, error = %e, "could not fail a task that keeps crashing");
            }
            continue;
        }
        agent
            .publish(
                &id,
                "status",
                serde_json::json!({"status": "RUNNING", "worker": worker}),
            )
            .await;
        let stop = agent.start_run(&id);
        let renew = tokio::spawn(keep_lease(
            Arc::clone(&agent),
            id.clone(),
            worker.clone(),
            lease,
        ));
        // Shutdown stops the run too; the task goes back to the queue below.
        let mut on_shutdown = shutdown.clone();
        let agent_for_stop = Arc::clone(&agent);
        let id_for_stop = id.clone();
        let stopper = tokio::spawn(async move {
            if on_shutdown.wait_for(|s| *s).await.is_ok() {
                agent_for_stop.stop_run(&id_for_stop);
            }
        });
        let run = Run {
            agent: &agent,
            desktop: &desktop,
            task_id: id.clone(),
            worker: worker.clone(),
            stop,
            shot_width: None,
        };
        let outcome = run.go().await;
        renew.abort();
        stopper.abort();
        agent.end_run(&id);
        match outcome {
            Ok(Outcome::Finished(status)) => {
                tracing::info!(worker = %worker, task = %id, %status, "task finished");
            }
            Ok(Outcome::Stopped(why)) => {
                tracing::info!(worker = %worker, task = %id, why, "run stopped");
                if let Err(e) = agent.store.release_task(&id, &worker).await {
                    tracing::debug!(task = %id, error = %e, "release after stop");
                }
                // Taken over: the desktop is the person's until they hand back; recording what
                // they do, and running nothing else on it.
                let taken = matches!(
                    agent.store.get_agent_task(&id).await,
                    Ok(Some(t)) if t.control == Control::User && !t.status.is_terminal()
                );
                if taken {
                    tracing::info!(worker = %worker, task = %id, "a person has the desktop");
                    crate::takeover::hold(&agent, &desktop, &id, &mut shutdown).await;
                }
            }
            Err(e) => {
                tracing::warn!(worker = %worker, task = %id, error = %e, "run failed; the task goes back to the queue");
                agent
                    .publish(
                        &id,
                        "run_error",
                        serde_json::json!({"message": e.to_string()}),
                    )
                    .await;
                let _ = agent.store.release_task(&id, &worker).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(worker = %worker, "agent worker stopped");
}

/// Renews the lease every third of its length; when it is lost (another worker took the task
/// after we stalled), stops our run so two workers never drive one task.
async fn keep_lease(agent: Arc<Agent>, id: String, worker: String, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match agent.store.renew_lease(&id, &worker, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(task = %id, worker = %worker, "lease lost; stopping the run");
                agent.stop_run(&id);
                return;
            }
            Err(e) => tracing::warn!(task = %id, error = %e, "cannot renew the lease; will retry"),
        }
    }
}
