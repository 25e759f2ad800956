//! Locks for the CLI: `shoal lock`, and the exclusive lock that `write`,
//! `append` and `put` take on their own.
//!
//! `shoal lock PATH -- COMMAND` holds PATH's lock while COMMAND runs, like
//! flock(1), and passes the lock on to COMMAND in `SHOAL_LOCK`, as
//! `TOKEN:MODE:TICKET:PATH` (the ticket is the request's place in arrival
//! order). A `shoal write`/`append`/`put` inside COMMAND that targets that
//! path writes under the inherited lock instead of queueing behind it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_client::{Client, DEFAULT_SESSION_TTL, Lock, Session};
use shoal_core::NormalPath;

/// The environment variable that hands a held lock to a child command.
pub const LOCK_ENV: &str = "SHOAL_LOCK";

/// A lock held for one command: its own session's, or one inherited.
pub struct Held {
    session: Option<Session>,
    pub lock: Lock,
}

impl Held {
    /// Lets go of the lock if this command took it.
    pub async fn release(self) -> anyhow::Result<()> {
        if let Some(s) = self.session {
            s.close().await?;
        }
        Ok(())
    }
}

fn normal(path: &str) -> anyhow::Result<String> {
    Ok(NormalPath::parse(path).map_err(shoal_core::FsError::from)?.to_string())
}

/// The exclusive lock on `path` inherited from `shoal lock`, if any.
fn inherited(path: &str) -> Option<Lock> {
    let value = std::env::var(LOCK_ENV).ok()?;
    let mut parts = value.splitn(4, ':');
    let token = parts.next()?.parse().ok()?;
    let mode = parts.next()?;
    let _ticket = parts.next()?;
    let locked = parts.next()?;
    (mode == "exclusive" && locked == path).then(|| Lock { path: locked.to_string(), shared: false, token, ticket: 0 })
}

/// Takes `path`'s exclusive lock (waiting up to `timeout`), or uses the one
/// `shoal lock` handed down.
pub async fn exclusive(client: &Client, path: &str, timeout: Duration) -> anyhow::Result<Held> {
    let path = normal(path)?;
    if let Some(lock) = inherited(&path) {
        return Ok(Held { session: None, lock });
    }
    let session = client.open_session(DEFAULT_SESSION_TTL).await?;
    let lock = session.lock(&path, false, Some(timeout)).await?;
    Ok(Held { session: Some(session), lock })
}

/// `shoal lock`: runs `command` while holding `path`'s lock; returns its exit code.
pub async fn run_locked(
    client: &Client,
    path: &str,
    shared: bool,
    ttl: Duration,
    timeout: Option<Duration>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = command.split_first() else { bail!("shoal lock needs a COMMAND after --") };
    let path = normal(path)?;
    let session = client.open_session(ttl).await?;
    let lock = session.lock(&path, shared, timeout).await?;
    let mode = if lock.shared { "shared" } else { "exclusive" };
    let status = tokio::process::Command::new(program)
        .args(args)
        .env(LOCK_ENV, format!("{}:{mode}:{}:{path}", lock.token, lock.ticket))
        .status()
        .await
        .with_context(|| format!("cannot run {program}"));
    let lost = !session.is_alive();
    session.close().await.ok();
    let status = status?;
    if lost {
        eprintln!("shoal lock: the lock on {path} was lost while {program} ran (its session expired)");
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::from(1),
    })
}
