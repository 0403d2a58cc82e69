//! The dispatcher's own thread, for the SQLite spool on the system's clock.

use tokio::sync::oneshot;

/// The thread a dispatcher runs on, when it has one of its own.
pub(super) struct OwnThread {
    /// Dropping it ends the thread's runtime.
    keep: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl OwnThread {
    /// Ends the thread's runtime and waits until it has shut down: every task left on it (attempts
    /// abandoned past the grace) has been dropped, and with them what they held of the spool.
    pub(super) async fn end(self) {
        drop(self.keep);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Runs `run` on a thread of its own (`hookgate-dispatch`) with a current-thread runtime whose upstream
/// requests go on connections of the thread's own, as a connection worker's do: the dispatcher, its
/// attempts and their upstream connections then wake each other on one thread, and a delivery crosses
/// threads only to and from the spool's writer (whose answers to a batch come together). Measured against
/// the shared multi-thread runtime in bench/ANALYSIS.md. Used for the SQLite spool with the system's clock:
/// a PostgreSQL spool's pooled connections, made by whichever runtime asks first, must outlive the
/// dispatcher, and a test's paused clock belongs to the test's runtime. The runtime is built on the new
/// thread and dropped there, never in the async code that calls this; when the thread or its runtime
/// cannot be made, `run` comes back with the error, to run elsewhere.
#[allow(clippy::type_complexity)]
pub(super) fn on_a_thread_of_its_own<F>(run: F) -> Result<(tokio::task::JoinHandle<()>, OwnThread), (std::io::Error, F)>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (keep, ended) = oneshot::channel::<()>();
    let (made, handle) = std::sync::mpsc::sync_channel::<std::io::Result<tokio::runtime::Handle>>(1);
    let thread = std::thread::Builder::new().name("hookgate-dispatch".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = made.send(Err(error));
                return;
            }
        };
        let _ = made.send(Ok(runtime.handle().clone()));
        crate::forward::use_a_client_of_this_thread();
        runtime.block_on(async {
            let _ = ended.await;
        });
    });
    let thread = match thread {
        Ok(thread) => thread,
        Err(error) => return Err((error, run)),
    };
    // The new thread answers as soon as its runtime is built (or has failed to be).
    match handle.recv() {
        Ok(Ok(handle)) => Ok((handle.spawn(run), OwnThread { keep, thread })),
        Ok(Err(error)) => Err((error, run)),
        Err(_) => Err((std::io::Error::other("the dispatcher's thread ended before its runtime was built"), run)),
    }
}
