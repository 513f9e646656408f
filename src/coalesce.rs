//! Coalescing: many callers' small requests answered by one statement.
//!
//! PostgreSQL spends tens of microseconds on a statement's round trip and
//! bookkeeping however little it does, and a node under a storm of connects
//! (or departures) makes thousands of tiny ones. So requests of one kind
//! queue here, and a few lane tasks each take whatever has accumulated (up
//! to `max_batch`) and answer all of it with one call. A lone request goes
//! out at once: a lane that is idle takes it as a batch of one, so nothing
//! waits for a batch to fill.
//!
//! The lanes also bound how much of the pool a kind of request can take:
//! a burst of 19,000 departures is 19,000 requests in a queue and at most
//! `lanes` connections, not 19,000 tasks waiting for the pool's 20
//! connections, where every other request (a new user's connect) would
//! wait its turn behind them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{StoreError, StoreResult};

/// One request and where its answer goes.
struct Ask<J, O> {
    job: J,
    reply: oneshot::Sender<StoreResult<O>>,
}

/// The queue of one kind of request, and the lanes that answer it.
pub struct Coalescer<J, O> {
    queue: mpsc::Sender<Ask<J, O>>,
    name: &'static str,
}

impl<J: Send + 'static, O: Send + 'static> Coalescer<J, O> {
    /// Starts `lanes` tasks that answer batches of jobs with `answer`,
    /// which returns one outcome per job, in order. After `stop` they
    /// answer what is already queued, then end.
    pub fn start<C, F>(
        name: &'static str,
        lanes: usize,
        max_batch: usize,
        (stop, tasks): (CancellationToken, &TaskTracker),
        answer: C,
    ) -> Self
    where
        C: Fn(Vec<J>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = StoreResult<Vec<O>>> + Send + 'static,
    {
        let queue = spawn_lanes(
            lanes,
            max_batch,
            stop,
            tasks,
            move |batch: Vec<Ask<J, O>>| {
                let answer = answer.clone();
                async move {
                    let (jobs, replies): (Vec<J>, Vec<_>) =
                        batch.into_iter().map(|a| (a.job, a.reply)).unzip();
                    let asked = jobs.len();
                    match answer(jobs).await {
                        Ok(outcomes) if outcomes.len() == asked => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        Ok(outcomes) => {
                            let e = StoreError::Internal(format!(
                                "{name}: {} answers to {asked} requests",
                                outcomes.len()
                            ));
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            },
        );
        Self { queue, name }
    }

    /// Queues `job` for the next batch and waits for its answer.
    pub async fn ask(&self, job: J) -> StoreResult<O> {
        request(&self.queue, self.name, |reply| Ask { job, reply }).await
    }
}

/// Queues the request `make` builds around its reply channel and waits
/// for the answer; `Unavailable("<name> stopped")` once the lanes have
/// stopped.
pub async fn request<T, O>(
    queue: &mpsc::Sender<T>,
    name: &str,
    make: impl FnOnce(oneshot::Sender<StoreResult<O>>) -> T,
) -> StoreResult<O> {
    let (reply, answer) = oneshot::channel();
    let stopped = || StoreError::Unavailable(format!("{name} stopped"));
    if queue.send(make(reply)).await.is_err() {
        return Err(stopped());
    }
    answer.await.unwrap_or_else(|_| Err(stopped()))
}

/// How long a lane holding a partial batch waits for another lane's
/// commit to end before committing beside it (see [`Turns`]).
const TURN_PATIENCE: Duration = Duration::from_millis(20);

/// What the lanes of one queue share: how many are committing, and a
/// wakeup when one is done.
///
/// A lane that takes a few jobs while another lane is committing waits
/// for that commit (up to `TURN_PATIENCE`) and takes whatever queued
/// meanwhile too: one commit of many costs PostgreSQL far less than two of
/// a few each (measured: a fifth less of its CPU per message at 5,000/s,
/// and a lower ack latency at 1,000/s, since fewer commits wait on the
/// disk). Past the patience (a slow or lost commit, which may take
/// seconds to settle) it commits beside the other, so one stuck commit
/// never holds up the rest.
#[derive(Default)]
struct Turns {
    committing: AtomicUsize,
    done: Notify,
}

/// Starts `lanes` tasks sharing one queue: each takes whatever has queued
/// (up to `max_batch` jobs) and hands it to `commit`, then takes the next,
/// taking turns with the others (see [`Turns`]). After `stop` they finish
/// what is already queued, then end. The queue holds a few batches per
/// lane; past that, callers wait to queue.
pub fn spawn_lanes<J, C, F>(
    lanes: usize,
    max_batch: usize,
    stop: CancellationToken,
    tasks: &TaskTracker,
    commit: C,
) -> mpsc::Sender<J>
where
    J: Send + 'static,
    C: Fn(Vec<J>) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (queue, rx) = mpsc::channel(max_batch * lanes * 4);
    let rx = Arc::new(Mutex::new(rx));
    let turns = Arc::new(Turns::default());
    for _ in 0..lanes {
        let shared = (rx.clone(), turns.clone());
        tasks.spawn(lane(shared, max_batch, stop.clone(), commit.clone()));
    }
    queue
}

async fn lane<J, C, F>(
    (rx, turns): (Arc<Mutex<mpsc::Receiver<J>>>, Arc<Turns>),
    max_batch: usize,
    stop: CancellationToken,
    commit: C,
) where
    C: Fn(Vec<J>) -> F,
    F: Future<Output = ()>,
{
    loop {
        let mut batch = Vec::with_capacity(max_batch);
        {
            let mut rx = rx.lock().await;
            let received = tokio::select! {
                // After stop, finish whatever is already queued.
                () = stop.cancelled() => {
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() { return; }
                    batch.len()
                }
                n = rx.recv_many(&mut batch, max_batch) => n,
            };
            if received == 0 {
                return;
            }
            if batch.len() < max_batch && !stop.is_cancelled() {
                // Registered before looking, so a commit that ends in
                // between is not missed. The queue stays this lane's while
                // it waits: what queues meanwhile joins this batch, not
                // the next one of the lane that just finished.
                let done = turns.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if turns.committing.load(Ordering::SeqCst) > 0 {
                    let _ = tokio::time::timeout(TURN_PATIENCE, done).await;
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                }
            }
            // Counted before the queue is let go, so the next lane to take
            // from it sees this commit.
            turns.committing.fetch_add(1, Ordering::SeqCst);
        }
        commit(batch).await;
        turns.committing.fetch_sub(1, Ordering::SeqCst);
        turns.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Requests that queue while a batch is answered go out together in
    /// the next one, each answered with its own outcome.
    #[tokio::test]
    async fn requests_queued_together_are_answered_by_one_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let counted = calls.clone();
        let doubler = Arc::new(Coalescer::start(
            "doubler",
            1,
            64,
            (stop.clone(), &tasks),
            move |jobs: Vec<u32>| {
                let calls = counted.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Long enough for every other request to queue.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(jobs.into_iter().map(|j| j * 2).collect())
                }
            },
        ));
        let first = tokio::spawn({
            let d = doubler.clone();
            async move { d.ask(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (2..=40)
            .map(|j| {
                let d = doubler.clone();
                tokio::spawn(async move { d.ask(j).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (j, asked) in (2..=40).zip(rest) {
            assert_eq!(asked.await.unwrap().unwrap(), j * 2);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the lone first, then the rest at once"
        );
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        assert!(matches!(
            doubler.ask(3).await,
            Err(StoreError::Unavailable(why)) if why == "doubler stopped"
        ));
    }

    /// While one lane commits, another that took a few jobs waits for it
    /// and commits everything that queued meanwhile as one batch; a commit
    /// stuck past the patience does not hold the other lane.
    #[tokio::test]
    async fn lanes_take_turns_but_never_wait_long_on_a_stuck_commit() {
        type Job = (u32, Option<oneshot::Receiver<()>>);
        let batches = Arc::new(std::sync::Mutex::new(Vec::<Vec<u32>>::new()));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let seen = batches.clone();
        let queue = spawn_lanes(2, 64, stop.clone(), &tasks, move |batch: Vec<Job>| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(batch.iter().map(|j| j.0).collect());
                // A gated job's commit lasts until the test opens its gate.
                for (_, gate) in batch {
                    if let Some(gate) = gate {
                        let _ = gate.await;
                    }
                }
            }
        });
        let committed = |n: usize| {
            let batches = batches.clone();
            async move {
                for _ in 0..200 {
                    if batches.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                panic!("{n} batches never committed");
            }
        };
        let (open_one, gate) = oneshot::channel();
        queue.send((1, Some(gate))).await.unwrap();
        committed(1).await;
        for j in [2, 3, 4] {
            queue.send((j, None)).await.unwrap();
        }
        // A pause well inside the patience: the other lane holds 2, 3 and
        // 4 and does not commit them beside 1.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(*batches.lock().unwrap(), vec![vec![1]]);
        queue.send((5, None)).await.unwrap();
        open_one.send(()).unwrap();
        committed(2).await;
        assert_eq!(*batches.lock().unwrap(), vec![vec![1], vec![2, 3, 4, 5]]);

        // A commit that never ends: the next job goes out after the
        // patience, beside it.
        let (_never, gate) = oneshot::channel();
        queue.send((6, Some(gate))).await.unwrap();
        committed(3).await;
        queue.send((7, None)).await.unwrap();
        committed(4).await;
        assert_eq!(batches.lock().unwrap()[3], vec![7]);
        stop.cancel();
    }

    /// A failed call answers every request in its batch with the failure,
    /// and an answer that does not match the requests is an error, not a
    /// wrong answer to someone.
    #[tokio::test]
    async fn a_failed_or_short_answer_reaches_every_request() {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let failing = Coalescer::start(
            "f",
            1,
            8,
            (stop.clone(), &tasks),
            |jobs: Vec<u32>| async move {
                if jobs.contains(&0) {
                    Err(StoreError::Unavailable("down".into()))
                } else {
                    Ok(vec![(); jobs.len() - 1])
                }
            },
        );
        assert!(matches!(failing.ask(0).await, Err(StoreError::Unavailable(w)) if w == "down"));
        assert!(matches!(
            failing.ask(5).await,
            Err(StoreError::Internal(w)) if w == "f: 0 answers to 1 requests"
        ));
        stop.cancel();
    }
}
