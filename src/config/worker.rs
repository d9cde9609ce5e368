//! The one thread that reads config files and parses configs, for the life of the process.
//!
//! Not tokio's blocking pool: the file poll every two seconds wakes a different idle pool
//! thread each time, so none idles out, and each thread that parsed keeps its own malloc
//! arena. One long-lived thread keeps what config work costs in memory the same after a
//! thousand reloads as after one, and a slow parse still never holds up a thread that
//! serves connections.

use std::sync::mpsc;
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the config thread and waits for it without blocking the caller's thread.
/// Jobs run one at a time, in the order given. `Err` only if `work` panicked (a parser bug):
/// the caller then keeps what it had, and the thread goes on serving later jobs.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Panicked> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The caller may have gone (its task was dropped); the work is then thrown away.
        let _ = done.send(work());
    });
    if jobs().send(job).is_err() {
        unreachable!("the config thread runs as long as the process");
    }
    // The job's end dropped `done` without a value only if it panicked.
    result.await.map_err(|_| Panicked)
}

#[derive(Debug, PartialEq, Eq)]
pub struct Panicked;

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the config thread panicked on it (a bug; the panic is on stderr)")
    }
}

fn jobs() -> &'static mpsc::Sender<Job> {
    static JOBS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("config".into())
            .spawn(move || {
                for job in receive {
                    // A panicking parse must not end the thread every later reload needs.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .expect("cannot start the config thread");
        send
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_on_one_named_thread_in_order() {
        let first = run(|| std::thread::current().name().map(str::to_owned)).await;
        let second = run(|| std::thread::current().id()).await.unwrap();
        let third = run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(first.unwrap().as_deref(), Some("config"));
        assert_eq!(second, third);
        assert_ne!(second, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_panicking_job_leaves_the_thread_serving() {
        assert_eq!(run(|| -> u8 { panic!("bad parse") }).await, Err(Panicked));
        assert_eq!(run(|| 7).await, Ok(7));
    }
}
