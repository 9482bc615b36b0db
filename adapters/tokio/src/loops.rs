//! Event loops that do not steal work from each other: the shape the grape API and the RPC
//! workers serve their connections on.
//!
//! A server accepts on one task (where its limits, displacement and waiting list live, so
//! they hold across loops without any coordination), then hands each accepted connection to
//! one of N single-threaded tokio runtimes, each on its own OS thread: the loop serving the
//! fewest connections. The connection is registered with that loop's reactor and stays there
//! for its whole life, so its wake-ups never cross threads and no other thread steals its
//! task: the nginx worker model, which keeps a tail latency the multi-thread scheduler loses
//! on contended cores (docs/BENCHMARKS.md, "Serving loops").
//!
//! Handing over from one accept task, rather than each loop accepting on its own
//! `SO_REUSEPORT` listener, balances exactly: the kernel's reuseport hash puts 3 of 4
//! connections on one of 2 loops about half of the time, and a listener shared by all loops
//! goes to whichever loop wakes first, often all of a burst to one loop. The cost is one
//! cross-thread wake-up per connection, not per request.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The default number of serving loops: one per core the process may run on but one, and at
/// least one (1 when the core count cannot be read).
///
/// Not one per core as nginx's `worker_processes auto`: a grape or a worker is never alone on
/// its machine. Its DHT thread, its clients, a second grape or the Node processes next to it
/// run too, and a loop that shares a core with them is preempted in the middle of its
/// connections, which then wait a time slice. On 2 cores with the load generator on the same
/// machine, one loop served `/lookup` 1.3× faster than two, with a lower tail
/// (docs/BENCHMARKS.md, "Serving loops"); on many cores the one left out costs little.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// One serving loop: where to spawn onto it, how many connections it serves, and (for a loop
/// on its own thread) the means to stop it and to know it stopped.
struct Loop {
    handle: Handle,
    load: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    ended: Option<oneshot::Receiver<()>>,
}

/// N event loops serving connections, each a current-thread runtime on its own OS thread; or,
/// with 0 threads, the runtime of the caller as the only loop.
///
/// Dropping it tells every thread to end (its runtime drops the tasks still on it);
/// [`Loops::shutdown`] does the same and waits for the threads to have ended.
pub(crate) struct Loops {
    loops: Vec<Loop>,
}

/// Counts a connection in its loop's load while it lives.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Loops {
    /// Starts `threads` loops named `<name>-<i>`; with 0, the caller's runtime is the one loop.
    /// Must be called within a tokio runtime. Fails when a thread or a runtime cannot be made.
    pub(crate) fn start(threads: usize, name: &str) -> io::Result<Loops> {
        if threads == 0 {
            return Ok(Loops::current());
        }
        let mut loops = Vec::with_capacity(threads);
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let (ended_tx, ended) = oneshot::channel::<()>();
            // The loops log where their starter logs: a subscriber set for the starting
            // thread only (`tracing::subscriber::with_default`, as tests do) covers them too.
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let _dispatch = tracing::dispatcher::set_default(&dispatch);
                    // Resolves on `stop` and when the `Loops` is dropped without it.
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                    // Drops the tasks still on this loop before saying it ended.
                    drop(runtime);
                    let _ = ended_tx.send(());
                })?;
            loops.push(Loop {
                handle,
                load: Arc::default(),
                stop: Some(stop),
                ended: Some(ended),
            });
        }
        Ok(Loops { loops })
    }

    /// The caller's runtime as the one loop. Must be called within a tokio runtime.
    pub(crate) fn current() -> Loops {
        Loops {
            loops: vec![Loop {
                handle: Handle::current(),
                load: Arc::default(),
                stop: None,
                ended: None,
            }],
        }
    }

    /// Connections each loop serves now, in loop order.
    #[cfg(test)]
    pub(crate) fn loads(&self) -> Vec<usize> {
        self.loops
            .iter()
            .map(|l| l.load.load(Ordering::Acquire))
            .collect()
    }

    /// Chooses the loop serving the fewest connections for `stream` and returns that loop's
    /// handle with the task to spawn there: it registers the stream with that loop's reactor
    /// and runs `serve` on it, counted in the loop's load until it ends. Fails, dropping the
    /// connection, when the stream cannot be taken out of the accepting runtime's reactor.
    pub(crate) fn place<S, F>(
        &self,
        stream: TcpStream,
        serve: S,
    ) -> io::Result<(Handle, impl Future<Output = ()> + Send + 'static)>
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(chosen) = self
            .loops
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Acquire))
        else {
            return Err(io::Error::other("no serving loop"));
        };
        // Out of the accepting runtime's reactor, to be registered with the chosen loop's.
        let stream = stream.into_std()?;
        chosen.load.fetch_add(1, Ordering::AcqRel);
        let load = LoadGuard(Arc::clone(&chosen.load));
        let task = async move {
            let _load = load;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(err) => tracing::debug!("cannot register a connection with its loop: {err}"),
            }
        };
        Ok((chosen.handle.clone(), task))
    }

    /// Stops every loop thread and waits until each has ended (and dropped the tasks left on
    /// it). The caller's runtime, with 0 threads, is left alone.
    pub(crate) async fn shutdown(mut self) {
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
        for l in &mut self.loops {
            if let Some(ended) = l.ended.take() {
                let _ = ended.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Accepts `n` connections on `listener` and places each on `loops`, answering with the
    /// name of the thread serving it.
    async fn accept_and_place(listener: &TcpListener, loops: &Loops, n: usize) {
        for _ in 0..n {
            let (stream, _) = listener.accept().await.unwrap();
            let (handle, task) = loops
                .place(stream, |mut stream| async move {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    stream.write_all(name.as_bytes()).await.unwrap();
                    stream.shutdown().await.unwrap();
                    // Served until the client closes.
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                })
                .unwrap();
            handle.spawn(task);
        }
    }

    async fn served_by(stream: &mut TcpStream) -> String {
        let mut name = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut name))
            .await
            .unwrap()
            .unwrap();
        name
    }

    #[tokio::test]
    async fn connections_are_spread_evenly_over_the_loops_and_served_on_their_threads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let loops = Loops::start(2, "test-loop").unwrap();
        assert_eq!(loops.loads(), [0, 0]);
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        accept_and_place(&listener, &loops, 4).await;
        let mut names = Vec::new();
        for client in &mut clients {
            names.push(served_by(client).await);
        }
        names.sort();
        assert_eq!(
            names,
            ["test-loop-0", "test-loop-0", "test-loop-1", "test-loop-1"],
            "4 connections on 2 loops: 2 each, on the loops' own threads"
        );
        assert_eq!(loops.loads(), [2, 2]);
        // A connection that ends leaves its loop's load; the next one goes there.
        drop(clients.remove(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while loops.loads().iter().sum::<usize>() != 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                loops.loads()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lighter = loops.loads().iter().position(|&n| n == 1).unwrap();
        let mut fifth = TcpStream::connect(addr).await.unwrap();
        accept_and_place(&listener, &loops, 1).await;
        assert_eq!(served_by(&mut fifth).await, format!("test-loop-{lighter}"));
        loops.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_waits_for_every_loop_and_drops_its_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let loops = Loops::start(3, "test-stop").unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        accept_and_place(&listener, &loops, 3).await;
        for client in &mut clients {
            served_by(client).await;
        }
        assert_eq!(thread_names("test-stop"), 3, "one thread per loop");
        tokio::time::timeout(Duration::from_secs(5), loops.shutdown())
            .await
            .expect("shutdown ends once every loop has");
        // A thread says it ended just before it exits.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while thread_names("test-stop") != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "loop threads still run"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for client in &mut clients {
            // The connection task was dropped with its loop: the socket is closed.
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte))
                .await
                .unwrap();
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }

    #[tokio::test]
    async fn zero_threads_serve_on_the_callers_runtime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let loops = Loops::start(0, "unused").unwrap();
        assert_eq!(loops.loads(), [0]);
        let mut client = TcpStream::connect(addr).await.unwrap();
        accept_and_place(&listener, &loops, 1).await;
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(served_by(&mut client).await, here);
        loops.shutdown().await;
    }

    /// Threads of this process whose name starts with `prefix` (Linux: /proc/self/task).
    fn thread_names(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with(prefix))
            .count()
    }
}
