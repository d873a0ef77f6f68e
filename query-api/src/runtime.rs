//! The query runtime: API queries are planned and run on their own threads,
//! with large stacks, never on the runtime that serves HTTP.
//!
//! - **Isolation from serving.** The collector's acks, `/healthz` and other
//!   requests stay responsive while queries use the CPU (STYLE: heavy
//!   DataFusion work on its own runtime).
//! - **Deep plans fit.** Planning and evaluating an expression recurses; the
//!   statement guard ([`crate::guard`]) bounds the depth, and these threads'
//!   stacks ([`QUERY_STACK_BYTES`], reserved, touched only as used) hold far
//!   more than the guard lets through.
//! - **Acks first.** On Linux the query threads (workers and blocking
//!   threads alike) run at a nice value (`api.query_nice`, 10 by default):
//!   when the collector's acknowledgements or the HTTP runtime want a core
//!   a query holds, the kernel gives it to them; when nothing else runs,
//!   queries take every core. Measured with `scripts/bench-isolation.sh`
//!   (BENCHMARKS.md, acks while a heavy query runs).
//! - **A failing query fails alone.** A query is a task: a panic in it ends
//!   that task, and the request gets a 500; dropping the request (timeout,
//!   client gone) aborts the task, which stops the query at its next yield.

use std::future::Future;
use std::sync::mpsc as std_mpsc;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Stack of each query thread. Address space is reserved, not memory: a
/// thread touches only the pages its deepest call uses.
pub const QUERY_STACK_BYTES: usize = 256 * 1024 * 1024;

/// A multi-threaded tokio runtime for queries, owned by a thread of its own
/// so it can be dropped from anywhere (a runtime may not be dropped inside
/// another runtime).
#[derive(Debug)]
pub struct QueryRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl QueryRuntime {
    /// Start the runtime with `threads` workers (0: one per core), each
    /// thread's nice value `nice` above the calling thread's (Linux; 0
    /// leaves the priority alone).
    pub fn start(threads: usize, nice: i32) -> std::io::Result<Self> {
        let workers = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let (tx, rx) = std_mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let base = thread_nice();
        std::thread::Builder::new()
            .name("crow-query-rt".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .max_blocking_threads(64)
                    .thread_stack_size(QUERY_STACK_BYTES)
                    .thread_name("crow-query")
                    .on_thread_start(move || lower_priority(base, nice))
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                        rt.shutdown_background();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the query runtime's thread ended"))??;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }

    /// Run `fut` on a query thread. Dropping the returned task aborts it.
    pub fn spawn<F>(&self, fut: F) -> QueryTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        QueryTask(self.handle.spawn(fut))
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The calling thread's nice value (Linux; 0 elsewhere or if unknown).
fn thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    return rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0);
    #[cfg(not(target_os = "linux"))]
    0
}

/// Give the calling thread nice value `base + nice`, at most 19 (a
/// per-thread attribute on Linux; `base` is the value of the thread that
/// built the runtime, so threads a query thread starts — blocking ones —
/// get the same value, not twice the step). Failing to is not fatal: the
/// thread keeps its priority and the reason is logged.
fn lower_priority(base: i32, nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let tid = Some(rustix::thread::gettid());
        if let Err(e) = rustix::process::setpriority_process(tid, (base + nice).min(19)) {
            tracing::warn!(nice, error = %e, "query thread keeps its priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (base, nice);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn query_threads_run_at_the_configured_nice_value() {
        let base = thread_nice();
        for (nice, want) in [(7, (base + 7).min(19)), (0, base)] {
            let rt = QueryRuntime::start(1, nice).expect("runtime");
            let (tx, rx) = std_mpsc::channel();
            let worker = tx.clone();
            let _task = rt.spawn(async move {
                let _ = worker.send(thread_nice());
                // Blocking threads are the runtime's too.
                let _ = tokio::task::spawn_blocking(move || tx.send(thread_nice())).await;
            });
            let on_worker = rx.recv().expect("worker's nice value");
            let on_blocking = rx.recv().expect("blocking thread's nice value");
            assert_eq!((on_worker, on_blocking), (want, want), "nice {nice}");
            // The thread that started the runtime is not lowered.
            assert_eq!(thread_nice(), base);
        }
    }
}

/// A task on the query runtime, aborted when dropped.
#[derive(Debug)]
pub struct QueryTask<T>(JoinHandle<T>);

impl<T> QueryTask<T> {
    /// Wait for the task. `Err` if it panicked or was aborted.
    pub async fn join(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
