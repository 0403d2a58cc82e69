//! Telling the reload task that the config file, or a file it reads, has changed. Their folders are
//! watched, not the files themselves: an editor saves by renaming a new file over the old one, and
//! Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink in the folder. Only events that
//! name one of the files, or `..data`, count.
//!
//! On Linux through inotify itself, on a thread of its own as notify does it, asking only for the events that end a change (a write closed, a file
//! created, renamed, removed or its metadata changed), never for each write or open: so a spool in the
//! same folder, whose every commit writes its WAL, does not wake the watcher at all. notify's inotify
//! backend asks for every write and open, and its thread read each one (5 % of a queue-mode profile's
//! samples with the spool beside the config). Elsewhere through notify, which filters the same names.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// Whether the watcher is woken by every write in a watched folder, even to files it then ignores (so a
/// spool beside the config keeps it busy): notify's backends are, this module's inotify is not.
pub(super) const WAKES_ON_EVERY_WRITE: bool = cfg!(not(target_os = "linux"));

/// The changes to the files named, as they happen; nothing once watching has failed.
pub(super) struct FileChanges {
    watcher: Option<backend::Watcher>,
}

impl FileChanges {
    /// Starts watching the folders of `files` now, so that a change made from here on is seen. A folder
    /// that cannot be watched is logged (SIGHUP still reloads).
    pub(super) fn watch(files: &[PathBuf]) -> FileChanges {
        let mut folders: Vec<PathBuf> = files
            .iter()
            .map(|f| {
                f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_path_buf()
            })
            .collect();
        folders.sort();
        folders.dedup();
        let names = Names(files.iter().filter_map(|f| f.file_name().map(OsStr::to_os_string)).collect());
        match backend::Watcher::new(names) {
            Ok(mut watcher) => {
                let mut watching = false;
                for folder in &folders {
                    match watcher.watch(folder) {
                        Ok(()) => watching = true,
                        Err(error) => {
                            tracing::warn!(%error, folder = %folder.display(), "cannot watch a folder the config reads from: reload with SIGHUP");
                        }
                    }
                }
                FileChanges { watcher: watching.then_some(watcher) }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config file: reload with SIGHUP");
                FileChanges { watcher: None }
            }
        }
    }

    /// Waits for the next change to one of the files; `None` (at once) when nothing is watched.
    pub(super) async fn next(&mut self) -> Option<()> {
        let watcher = self.watcher.as_mut()?;
        match watcher.changed().await {
            Ok(()) => Some(()),
            Err(error) => {
                tracing::warn!(%error, "stopped watching the config file: reload with SIGHUP");
                self.watcher = None;
                None
            }
        }
    }
}

/// The names of the files watched (a change to another file in their folders is no change).
struct Names(Vec<OsString>);

impl Names {
    fn ours(&self, name: &OsStr) -> bool {
        self.0.iter().any(|n| n == name) || name.to_string_lossy().starts_with("..data")
    }
}

#[cfg(target_os = "linux")]
mod backend {
    use std::path::Path;

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use tokio::sync::mpsc;

    use super::Names;

    /// Room for a few dozen events (each is 16 bytes and its name) per read.
    const BUFFER_BYTES: usize = 4096;

    /// The events that end a change of a file in the folder: a write closed (an editor saving in place,
    /// `cp`), a file created or removed, renamed in or out (an editor's or Kubernetes' atomic swap), its
    /// mode or owner changed. Not each write (`MODIFY`) nor each open: a spool beside the config writes
    /// and opens all the time, and none of it concerns the config.
    pub(super) fn mask() -> WatchMask {
        WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
    }

    /// An inotify instance read by a thread of its own, which sleeps in `read` until an event of
    /// [`mask`] comes and sends a unit when one names a watched file. Dropping it removes the watches,
    /// whose removal wakes the thread to end.
    pub(super) struct Watcher {
        watches: Watches,
        watched: Vec<WatchDescriptor>,
        changes: mpsc::UnboundedReceiver<()>,
        reader: Option<(Inotify, Names, mpsc::UnboundedSender<()>)>,
    }

    impl Watcher {
        pub(super) fn new(names: Names) -> std::io::Result<Watcher> {
            let inotify = Inotify::init()?;
            let (sender, changes) = mpsc::unbounded_channel();
            Ok(Watcher {
                watches: inotify.watches(),
                watched: Vec::new(),
                changes,
                reader: Some((inotify, names, sender)),
            })
        }

        pub(super) fn watch(&mut self, folder: &Path) -> std::io::Result<()> {
            self.watched.push(self.watches.add(folder, mask())?);
            Ok(())
        }

        /// Returns once an event names a watched file, or the kernel's queue overflowed (a change may have
        /// been lost). The thread starts at the first call, once every folder is watched.
        pub(super) async fn changed(&mut self) -> std::io::Result<()> {
            if let Some((inotify, names, sender)) = self.reader.take() {
                std::thread::Builder::new()
                    .name("hookgate-config-watch".into())
                    .spawn(move || read_events(inotify, &names, &sender))?;
            }
            self.changes.recv().await.ok_or_else(|| std::io::Error::other("the config watcher's thread has stopped"))
        }
    }

    impl Drop for Watcher {
        fn drop(&mut self) {
            self.changes.close();
            for watched in self.watched.drain(..) {
                let _ = self.watches.remove(watched);
            }
        }
    }

    fn read_events(mut inotify: Inotify, names: &Names, changes: &mpsc::UnboundedSender<()>) {
        let mut buffer = [0; BUFFER_BYTES];
        loop {
            let Ok(events) = inotify.read_events_blocking(&mut buffer) else { return };
            let ours = events.into_iter().any(|event| {
                event.mask.contains(EventMask::Q_OVERFLOW) || event.name.is_some_and(|name| names.ours(name))
            });
            if (ours && changes.send(()).is_err()) || changes.is_closed() {
                return;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod backend {
    use std::path::Path;

    use notify::Watcher as _;

    use super::Names;

    /// notify's watcher, whose thread sends a unit for each event that names a watched file.
    pub(super) struct Watcher {
        watcher: notify::RecommendedWatcher,
        changes: tokio::sync::mpsc::UnboundedReceiver<()>,
    }

    impl Watcher {
        pub(super) fn new(names: Names) -> notify::Result<Watcher> {
            let (sender, changes) = tokio::sync::mpsc::unbounded_channel();
            let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                let ours = event.paths.iter().any(|changed| changed.file_name().is_some_and(|name| names.ours(name)));
                if ours && !event.kind.is_access() {
                    let _ = sender.send(());
                }
            })?;
            Ok(Watcher { watcher, changes })
        }

        pub(super) fn watch(&mut self, folder: &Path) -> notify::Result<()> {
            self.watcher.watch(folder, notify::RecursiveMode::NonRecursive)
        }

        pub(super) async fn changed(&mut self) -> std::io::Result<()> {
            self.changes.recv().await.ok_or_else(|| std::io::Error::other("the watcher's thread has stopped"))
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hookgate-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Whether a change is reported within `wait`; then the rest of its burst is drained.
    async fn changed_within(changes: &mut FileChanges, wait: Duration) -> bool {
        let changed = tokio::time::timeout(wait, changes.next()).await.is_ok_and(|next| next.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        while tokio::time::timeout(Duration::from_millis(10), changes.next()).await.is_ok() {}
        changed
    }

    /// The writes of a spool beside the config (its write-ahead log kept open and written, as SQLite does
    /// at every commit) queue no event at all: nothing wakes the watcher's thread.
    #[test]
    fn a_spools_writes_beside_the_config_queue_no_event() {
        let dir = folder("spool-writes");
        let wal = dir.join("hookgate.db-wal");
        std::fs::write(&wal, b"").unwrap();
        let mut inotify = inotify::Inotify::init().unwrap();
        inotify.watches().add(&dir, backend::mask()).unwrap();
        let mut log = std::fs::OpenOptions::new().read(true).write(true).open(&wal).unwrap();
        for _ in 0..100 {
            log.write_all(&[0; 4096]).unwrap();
            log.sync_data().unwrap();
        }
        let mut buffer = [0; 4096];
        let read = inotify.read_events(&mut buffer).map(|events| events.count());
        assert_eq!(read.map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock), "no event queued");
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The config file changed as editors and Kubernetes change it is seen; other files in its folder are
    /// not.
    #[tokio::test]
    async fn the_config_is_seen_written_in_place_renamed_over_and_swapped_by_kubernetes() {
        let dir = folder("config-changes");
        let file = dir.join("hookgate.yaml");
        std::fs::write(&file, "first").unwrap();
        let mut changes = FileChanges::watch(std::slice::from_ref(&file));
        let wait = Duration::from_secs(5);

        std::fs::write(dir.join("hookgate.db"), "a spool").unwrap();
        std::fs::write(dir.join("notes.txt"), "another file").unwrap();
        assert!(!changed_within(&mut changes, Duration::from_millis(300)).await, "other files are no change");

        std::fs::write(&file, "written in place").unwrap();
        assert!(changed_within(&mut changes, wait).await, "written in place");

        std::fs::write(dir.join(".hookgate.yaml.swp"), "renamed over").unwrap();
        std::fs::rename(dir.join(".hookgate.yaml.swp"), &file).unwrap();
        assert!(changed_within(&mut changes, wait).await, "renamed over (an editor's save)");

        // A mounted ConfigMap: a new timestamped folder, and `..data` swapped to it by a rename.
        std::fs::create_dir(dir.join("..2026_12_01")).unwrap();
        std::os::unix::fs::symlink("..2026_12_01", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert!(changed_within(&mut changes, wait).await, "..data swapped (Kubernetes)");
        drop(changes);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
