//! A thread of its own for the broker-facing side of the MQTT source: the connection task,
//! the intake and the acknowledgements.
//!
//! How fast the agent acknowledges decides whether the broker's queue for this client
//! overflows (Mosquitto drops messages beyond `max_queued_messages`). On the shared runtime
//! these few tasks would take turns with every delivery in flight, so a burst that starts
//! a thousand deliveries would slow the acknowledgements just when they matter most. Here
//! they have a current-thread runtime to themselves; deliveries still run on the shared
//! runtime (the dispatcher spawns there), and SQLite is still reached through the queue
//! thread.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub(crate) struct IoThread {
    handle: Handle,
    /// Dropped to let the thread end (its runtime is dropped there, outside async code).
    _stop: oneshot::Sender<()>,
}

impl IoThread {
    pub(crate) fn start() -> std::io::Result<IoThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("mqtt-io")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("mqtt-io".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(IoThread {
            handle,
            _stop: stop,
        })
    }

    /// Runs `task` on the thread; the handle can be awaited from any runtime.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}
