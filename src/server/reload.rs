//! Reloading the configuration while serving: on SIGHUP and when the file, or a file it reads, changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Gateway;

mod changes;

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
    /// certificate and key), so that a change made from here on is seen. The folder is watched, not the
    /// file: Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink in that folder.
    pub(super) fn watch(self, gateway: Arc<Gateway>) -> Watching {
        use notify::Watcher as _;
        let (causes, cause) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let mut files: Vec<PathBuf> = vec![self.path.clone()];
        files.extend(gateway.config().files.iter().cloned());
        let mut folders: Vec<PathBuf> = files
            .iter()
            .map(|f| f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
            .collect();
        folders.sort();
        folders.dedup();
        let spool_watched = gateway.config().delivery.queue().and_then(|queue| {
            let path = queue.spool.sqlite_path()?;
            let folder = path.parent()?;
            folders.iter().any(|f| same_folder(f, folder)).then(|| path.to_path_buf())
        });
        let names: Vec<std::ffi::OsString> =
            files.iter().filter_map(|f| f.file_name().map(|n| n.to_os_string())).collect();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let ours = event.paths.iter().any(|changed| {
                changed
                    .file_name()
                    .is_some_and(|file| names.iter().any(|n| n == file) || file.to_string_lossy().starts_with("..data"))
            });
            if ours && !event.kind.is_access() {
                let _ = causes.send("file change");
            }
        });
        let watcher = match watcher {
            Ok(mut watcher) => {
                for folder in &folders {
                    if let Err(error) = watcher.watch(folder, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(%error, folder = %folder.display(), "cannot watch a folder the config reads from: reload with SIGHUP");
                    }
                }
                Some(watcher)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config file: reload with SIGHUP");
                None
            }
        };
        Watching { gateway, path: self.path, hangups: self.hangups, cause, _watcher: watcher, spool_watched }
    }
}

/// A gateway's reloads, watching: run it for as long as the gateway serves.
pub(super) struct Watching {
    gateway: Arc<Gateway>,
    path: PathBuf,
    hangups: Option<Hangups>,
    cause: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    /// Kept alive: dropping it stops the watching.
    _watcher: Option<notify::RecommendedWatcher>,
    /// The spool, when it lies in a watched folder.
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
                Some(first) = self.cause.recv() => first,
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
                    Some(_) = self.cause.recv() => {}
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
    let b = if b.as_os_str().is_empty() { Path::new(".") } else { b };
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
