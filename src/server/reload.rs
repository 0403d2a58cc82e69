//! Reloading the configuration while serving: on SIGHUP and when the file, or a file it reads, changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Gateway;

mod changes;
mod watch;

/// SIGHUP, installed before the gateway says it serves (its default action would end the process).
#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

/// What a gateway reloads from, and on what: a change of the file (or a file it reads), and SIGHUP when
/// asked for, whose handler is installed when this is made (before anything says it serves, since SIGHUP's
/// default action would end the process).
pub struct Reloads {
    path: PathBuf,
    hangups: Option<Hangups>,
}

impl Reloads {
    /// Reloads from `path` when it, or a file it reads, changes.
    pub fn on_file_change(path: &Path) -> Reloads {
        Reloads { path: path.to_path_buf(), hangups: None }
    }

    /// Reloads from `path` when it, or a file it reads, changes, and on SIGHUP (what `hookgate serve` does).
    pub fn on_file_change_and_sighup(path: &Path) -> Reloads {
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        #[cfg(not(unix))]
        let hangups = Some(());
        Reloads { path: path.to_path_buf(), hangups }
    }

    /// Starts watching now: the folders of the config file and of every file it reads (secret files, TLS
    /// certificate and key), so that a change made from here on is seen (see [`watch`] for why folders).
    pub(super) fn watch(self, gateway: Arc<Gateway>) -> Watching {
        let mut files: Vec<PathBuf> = vec![self.path.clone()];
        files.extend(gateway.config().files.iter().cloned());
        let changes = watch::FileChanges::watch(&files);
        let spool_watched = gateway.config().delivery.queue().and_then(|queue| {
            let path = queue.spool.sqlite_path()?;
            let folder = path.parent()?;
            let watched = files.iter().filter_map(|f| f.parent()).any(|f| same_folder(f, folder));
            (watch::WAKES_ON_EVERY_WRITE && watched).then(|| path.to_path_buf())
        });
        Watching { gateway, path: self.path, hangups: self.hangups, changes, spool_watched }
    }
}

/// A gateway's reloads, watching: run it for as long as the gateway serves.
pub(super) struct Watching {
    gateway: Arc<Gateway>,
    path: PathBuf,
    hangups: Option<Hangups>,
    /// Closed when dropped: ending the task ends the watching.
    changes: watch::FileChanges,
    /// The spool, when it lies in a watched folder and the watcher wakes on its every write.
    spool_watched: Option<PathBuf>,
}

impl Watching {
    /// Reloads on each file change or SIGHUP, once per burst of them. One task waits for both causes, so
    /// that ending it (at a stop) ends them both.
    pub(super) async fn run(mut self) {
        if let Some(spool) = &self.spool_watched {
            // inotify reports every write in a watched folder: each spool commit would wake the watcher.
            tracing::warn!(
                spool = %spool.display(),
                "the spool is in a folder watched for config changes, so every spool write wakes the watcher: give it a folder of its own (the default ./data/ is)"
            );
        }
        loop {
            let first = tokio::select! {
                Some(()) = self.changes.next() => "file change",
                Some(()) = hangup(&mut self.hangups) => "SIGHUP",
                else => return,
            };
            // Editors and Kubernetes write in several steps (and an operator may send SIGHUP after saving):
            // let them finish, taking in every cause meanwhile, then reload once.
            let settle = tokio::time::sleep(std::time::Duration::from_millis(200));
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    () = &mut settle => break,
                    Some(()) = self.changes.next() => {}
                    Some(()) = hangup(&mut self.hangups) => {}
                }
            }
            self.reload(first);
        }
    }

    fn reload(&self, cause: &'static str) {
        let before = self.gateway.config();
        match self.gateway.reload(&self.path) {
            Ok(restart) => {
                // What changed, by name (never a secret): the line an operator reads after a rotation.
                let changes = changes::changes(&before, &self.gateway.config());
                let changes = if changes.is_empty() {
                    "no source, route or secret changed".to_owned()
                } else {
                    changes.join("; ")
                };
                tracing::info!(cause, file = %self.path.display(), changes, "configuration reloaded");
                // What `hookgate check` would warn about in the new file (a topic typo, say).
                for warning in &self.gateway.config().warnings {
                    tracing::warn!("{warning}");
                }
                for setting in restart {
                    tracing::warn!(setting = %setting, "changed in the file, but takes effect only after a restart");
                }
            }
            Err(error) => {
                tracing::error!(cause, error = %error, "configuration reload refused: the previous configuration keeps serving");
            }
        }
    }
}

/// The next SIGHUP; never, without a handler.
async fn hangup(hangups: &mut Option<Hangups>) -> Option<()> {
    match hangups {
        #[cfg(unix)]
        Some(hangups) => hangups.recv().await,
        #[cfg(not(unix))]
        Some(()) => std::future::pending().await,
        None => std::future::pending().await,
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    let here = |p: &'_ Path| if p.as_os_str().is_empty() { Path::new(".").to_path_buf() } else { p.to_path_buf() };
    let (a, b) = (here(a), here(b));
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
