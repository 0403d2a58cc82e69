//! Connection workers: one thread per core, each running a current-thread runtime, and the webhook
//! listener's connections handed to them in turn. A connection and everything its requests do (hyper, the
//! contract's steps, the upstream exchange on the worker's own pooled client) then stay on one thread:
//! no task is woken from another thread on the way, which on a busy machine is most of a proxied
//! request's cost beyond the system calls it must make.
//!
//! The accept loop hands each connection to the next worker (round robin), so that connections spread
//! evenly: two runtimes accepting on one listener, or `SO_REUSEPORT` listeners hashing by address, leave
//! some threads with more connections than others, and those connections' latency with them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The running workers; dropping this ends them (their connections, if any are left, are closed).
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Each worker runs until its sender is dropped.
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers, each on a thread of its own named `hookgate-worker-N`; none for 0.
    pub fn start(count: usize) -> std::io::Result<Option<Workers>> {
        if count == 0 {
            return Ok(None);
        }
        let (mut handles, mut stops) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new().name(format!("hookgate-worker-{index}")).spawn(move || {
                crate::forward::use_a_client_of_this_thread();
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        }
        Ok(Some(Workers { handles, next: AtomicUsize::new(0), _stops: stops }))
    }

    /// Serves `stream` with `serve` on the next worker in turn, the stream registered with that worker's
    /// own reactor. Should that fail (it does not, short of running out of memory), the connection is
    /// closed.
    pub fn serve<F, Serving>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Serving + Send + 'static,
        Serving: Future<Output = ()> + Send + 'static,
    {
        let Ok(stream) = stream.into_std() else { return };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream).await;
            }
        });
    }
}
