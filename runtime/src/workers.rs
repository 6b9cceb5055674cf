//! A fixed pool of OS threads for synchronous, CPU-bound work (plugin and model calls),
//! fed by a bounded queue. Async callers submit a job and await its result without
//! occupying a runtime thread; a full queue is refused at once ([`WorkerError::Overloaded`])
//! so overload turns into fast rejections instead of unbounded memory and latency. A job
//! runs in its caller's tracing span.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tokio::sync::oneshot;

use crate::idle;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("the work queue is full ({capacity} jobs waiting)")]
    Overloaded { capacity: usize },
    #[error("the worker pool is shut down")]
    ShutDown,
    #[error("the job panicked")]
    Panicked,
}

#[derive(Debug)]
pub struct WorkerPool {
    sender: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    capacity: usize,
}

impl WorkerPool {
    /// `threads` workers named `{name}-{i}` sharing a queue of `capacity` waiting jobs.
    pub fn new(name: &str, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (sender, receiver) = bounded::<Job>(capacity);
        let threads = (0..threads.max(1))
            .map(|index| {
                let receiver = receiver.clone();
                std::thread::Builder::new().name(format!("{name}-{index}")).spawn(move || run(&receiver))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { sender: Some(sender), threads, capacity })
    }

    /// Queues `job` and returns a future of its result, or refuses at once when the
    /// queue is full.
    pub fn submit<R, F>(&self, job: F) -> Result<impl Future<Output = Result<R, WorkerError>> + use<R, F>, WorkerError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        // The caller's span (a request's, with its id) follows the job to its thread, so
        // that whatever the job logs is the request's.
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _entered = span.enter();
            // A panic is reported to the caller (the dropped reply) and the thread lives on.
            if let Ok(value) = catch_unwind(AssertUnwindSafe(job)) {
                let _ = reply.send(value);
            }
        });
        let sender = self.sender.as_ref().ok_or(WorkerError::ShutDown)?;
        sender.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => WorkerError::Overloaded { capacity: self.capacity },
            TrySendError::Disconnected(_) => WorkerError::ShutDown,
        })?;
        Ok(async move { result.await.map_err(|_| WorkerError::Panicked) })
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::len)
    }
}

/// Runs jobs until the pool is dropped. After a job, the wait for the next is bounded by
/// [`idle::AFTER`]: a worker that got none gives its free memory back, then waits unbounded.
fn run(receiver: &Receiver<Job>) {
    let mut worked = false;
    loop {
        let next = if worked {
            receiver.recv_timeout(idle::AFTER)
        } else {
            receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(job) => {
                job();
                worked = true;
            }
            Err(RecvTimeoutError::Timeout) => {
                idle::thread_idle();
                worked = false;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Drop for WorkerPool {
    /// Lets queued jobs finish, then joins the workers.
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_return_results() {
        let pool = WorkerPool::new("test", 2, 4).unwrap();
        let name = pool.submit(|| std::thread::current().name().map(str::to_owned)).unwrap().await.unwrap();
        assert!(name.unwrap().starts_with("test-"));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_the_pool_recovers() {
        let pool = WorkerPool::new("test", 1, 1).unwrap();
        let gate = Arc::new(Barrier::new(2));
        let held = Arc::clone(&gate);
        let running = pool.submit(move || held.wait()).unwrap();
        // Wait until the worker has taken the first job, so the queue is empty again.
        while pool.queued() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = pool.submit(|| 2).unwrap();
        assert_eq!(pool.submit(|| 3).err(), Some(WorkerError::Overloaded { capacity: 1 }));
        gate.wait();
        running.await.unwrap();
        assert_eq!(queued.await, Ok(2));
        assert_eq!(pool.submit(|| 4).unwrap().await, Ok(4));
    }

    #[tokio::test]
    async fn the_caller_s_span_follows_the_job_to_its_thread() {
        // Spans are tracked only under a subscriber; the appliance installs its own at start.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let pool = WorkerPool::new("test", 1, 4).unwrap();
        let request = tracing::info_span!("request");
        let caller = request.id().expect("a span the subscriber tracks");
        let pending = request.in_scope(|| pool.submit(|| tracing::Span::current().id())).unwrap();
        assert_eq!(pending.await.unwrap(), Some(caller));
        // Outside any span, the job runs outside any.
        assert_eq!(pool.submit(|| tracing::Span::current().id()).unwrap().await.unwrap(), None);
    }

    /// Which threads called the idle hook, in order (the hook is process-wide, so the
    /// store writer's unit tests may report here too). `idle::set_release` keeps the first
    /// hook installed: no other unit test may install one.
    static IDLE_THREADS: std::sync::Mutex<Option<std::sync::mpsc::Sender<String>>> = std::sync::Mutex::new(None);

    fn report_idle_thread() {
        let name = std::thread::current().name().unwrap_or_default().to_owned();
        if let Some(sender) = IDLE_THREADS.lock().unwrap().as_ref() {
            let _ = sender.send(name);
        }
    }

    #[tokio::test]
    async fn a_worker_gives_its_memory_back_once_after_work_then_waits() {
        let (sender, idle_threads) = std::sync::mpsc::channel();
        *IDLE_THREADS.lock().unwrap() = Some(sender);
        idle::set_release(report_idle_thread);
        let pool = WorkerPool::new("idle-test", 1, 4).unwrap();
        // Our worker's next report within `within`, skipping other threads' reports.
        let next_report = |within: std::time::Duration| {
            let deadline = std::time::Instant::now() + within;
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match idle_threads.recv_timeout(left) {
                    Ok(name) if name.starts_with("idle-test-") => return Some(name),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
            None
        };
        let finished = pool.submit(std::time::Instant::now).unwrap().await.unwrap();
        assert_eq!(next_report(idle::AFTER * 10).as_deref(), Some("idle-test-0"), "the worker reports after its job");
        assert!(finished.elapsed() >= idle::AFTER, "released only after idle::AFTER without a job");
        // Once per idle spell: no second report without another job.
        assert_eq!(next_report(idle::AFTER * 3), None, "an idle worker releases once, not every idle::AFTER");
        assert_eq!(pool.submit(|| 2).unwrap().await, Ok(2));
        assert_eq!(next_report(idle::AFTER * 10).as_deref(), Some("idle-test-0"));
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_worker_survives() {
        let pool = WorkerPool::new("test", 1, 4).unwrap();
        assert_eq!(pool.submit(|| panic!("boom")).unwrap().await, Err::<(), _>(WorkerError::Panicked));
        assert_eq!(pool.submit(|| 5).unwrap().await, Ok(5));
    }
}
