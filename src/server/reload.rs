//! Reloading the configuration while serving: on SIGHUP and when the file, or a file it reads, changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Gateway;

/// SIGHUP, installed before the gateway says it serves (its default action would end the process).
#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

/// What to reload from, with the SIGHUP handler already installed when asked for.
pub struct Reload {
    path: PathBuf,
    hangups: Option<Hangups>,
}

impl Reload {
    /// Reloads from `path`; listens for SIGHUP when `on_hangup`.
    pub fn new(path: PathBuf, on_hangup: bool) -> Reload {
        #[cfg(unix)]
        let hangups =
            on_hangup.then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()).flatten();
        #[cfg(not(unix))]
        let hangups = on_hangup.then_some(());
        Reload { path, hangups }
    }

    /// Reloads for as long as the gateway serves.
    pub async fn run(self, gateway: Arc<Gateway>) {
        reloads(gateway, self.path, self.hangups).await;
    }
}

/// Reloads the configuration on SIGHUP and when the file changes. The file's folder is watched, not the
/// file: Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink in that folder.
async fn reloads(gateway: Arc<Gateway>, path: PathBuf, hangups: Option<Hangups>) {
    use notify::Watcher as _;
    let (causes, mut cause) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    #[cfg(unix)]
    if let Some(mut hangups) = hangups {
        let causes = causes.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let _ = causes.send("SIGHUP");
            }
        });
    }
    #[cfg(not(unix))]
    let _ = hangups;
    // The config file and every file it reads (secret files, TLS certificate and key), by folder.
    let mut files: Vec<PathBuf> = vec![path.clone()];
    files.extend(gateway.config().files.iter().cloned());
    let mut folders: Vec<PathBuf> = files
        .iter()
        .map(|f| f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
        .collect();
    folders.sort();
    folders.dedup();
    let config = gateway.config();
    if let Some(queue) = config.delivery.queue()
        && let Some(spool_folder) = queue.spool_path.parent()
        && folders.iter().any(|f| same_folder(f, spool_folder))
    {
        // inotify reports every write in a watched folder: each spool commit would wake the watcher.
        tracing::warn!(
            spool = %queue.spool_path.display(),
            "the spool is in a folder watched for config changes, so every spool write wakes the watcher: give it a folder of its own (the default ./data/ is)"
        );
    }
    let names: Vec<std::ffi::OsString> = files.iter().filter_map(|f| f.file_name().map(|n| n.to_os_string())).collect();
    let watcher = {
        let causes = causes.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let ours = event.paths.iter().any(|changed| {
                changed
                    .file_name()
                    .is_some_and(|file| names.iter().any(|n| n == file) || file.to_string_lossy().starts_with("..data"))
            });
            if ours && !event.kind.is_access() {
                let _ = causes.send("file change");
            }
        })
    };
    let _watcher = match watcher {
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
    while let Some(first) = cause.recv().await {
        // Editors and Kubernetes write in several steps: let them finish, then reload once.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        while cause.try_recv().is_ok() {}
        match gateway.reload(&path) {
            Ok(restart) => {
                tracing::info!(cause = first, file = %path.display(), "configuration reloaded");
                for setting in restart {
                    tracing::warn!(setting = %setting, "changed in the file, but takes effect only after a restart");
                }
            }
            Err(error) => {
                tracing::error!(cause = first, error = %error, "configuration reload refused: the previous configuration keeps serving");
            }
        }
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    let b = if b.as_os_str().is_empty() { Path::new(".") } else { b };
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
