//! The dispatcher's own thread, for the SQLite spool on the system's clock.

/// Runs `run` on a thread of its own (`hookgate-dispatch`) with a current-thread runtime whose upstream
/// requests go on connections of the thread's own, as a connection worker's do: the dispatcher, its
/// attempts and their upstream connections then wake each other on one thread, and a delivery crosses
/// threads only to and from the spool's writer (whose answers to a batch come together). Measured against
/// the shared multi-thread runtime in BENCHMARKS.md. Used for the SQLite spool with the system's clock:
/// a PostgreSQL spool's pooled connections, made by whichever runtime asks first, must outlive the
/// dispatcher, and a test's paused clock belongs to the test's runtime. The thread ends when the
/// returned sender is dropped.
#[allow(clippy::type_complexity)]
pub(super) fn on_a_thread_of_its_own<F>(
    run: F,
) -> Result<(tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>), (std::io::Error, F)>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return Err((error, run)),
    };
    let (keep, ended) = tokio::sync::oneshot::channel::<()>();
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new().name("hookgate-dispatch".into()).spawn(move || {
        crate::forward::use_a_client_of_this_thread();
        runtime.block_on(async {
            let _ = ended.await;
        });
    });
    match thread {
        Ok(_) => Ok((handle.spawn(run), keep)),
        Err(error) => Err((error, run)),
    }
}
