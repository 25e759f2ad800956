//! Group commit: one fsync for every append that arrived meanwhile.
//!
//! `LogStore::append` writes its frames into the segment's page cache and
//! hands the flusher a [`Job`]: the files it wrote, whether it made a new
//! segment (then the directory needs an fsync too), and openraft's callback.
//! The flusher thread takes every job waiting, fsyncs each file named once
//! (and the directory once), and only then completes the callbacks, in the
//! order the appends were made. Appends that arrive while one fsync runs
//! gather behind it and share the next. (openraft 0.9 waits for each
//! append's callback before it issues the next, so today a round holds one
//! append: one client write on the leader, or one AppendEntries batch, many
//! entries, on a follower. The flusher still keeps the fsync off the async
//! runtime's threads.)
//!
//! An fsync that fails poisons the store: the pages it could not write may
//! be marked clean by the kernel and later read back as if durable, so no
//! later fsync can vouch for them. Every later append is refused until the
//! process restarts (and openraft stops on the error it gets).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::Segment;

/// What to call once the append is durable, or failed.
pub type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// What one append needs made durable before it is acknowledged.
pub struct Job {
    /// Entries the append wrote (for the metrics).
    pub entries: u64,
    pub files: Vec<Arc<Segment>>,
    pub sync_dir: bool,
    pub done: Done,
}

/// The handle to the flusher thread; the thread ends when this drops.
pub struct Flusher {
    jobs: mpsc::Sender<Job>,
    /// fsync rounds so far (tests and metrics).
    rounds: Arc<AtomicU64>,
    /// Set once an fsync failed.
    poisoned: Arc<AtomicBool>,
    /// Held by the thread while it gathers a round (tests hold it to make
    /// appends wait for one round deterministically).
    #[cfg_attr(not(test), allow(dead_code))]
    gate: Arc<Mutex<()>>,
}

impl Flusher {
    pub fn start(dir: PathBuf) -> Flusher {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rounds = Arc::new(AtomicU64::new(0));
        let counted = rounds.clone();
        let gate = Arc::new(Mutex::new(()));
        let gate_of_thread = gate.clone();
        let poisoned = Arc::new(AtomicBool::new(false));
        let poison = poisoned.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || run(dir, rx, counted, gate_of_thread, poison))
            .expect("starting the log flusher thread");
        Flusher { jobs, rounds, poisoned, gate }
    }

    /// Whether an fsync has failed (see the module doc).
    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Keeps the next round from gathering its jobs until the guard drops.
    #[cfg(test)]
    pub fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap()
    }

    pub fn submit(&self, job: Job) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            (job.done)(Err(std::io::Error::other("the log flusher has stopped")));
        }
    }

    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }
}

fn run(dir: PathBuf, rx: mpsc::Receiver<Job>, rounds: Arc<AtomicU64>, gate: Arc<Mutex<()>>, poisoned: Arc<AtomicBool>) {
    while let Ok(first) = rx.recv() {
        let gathering = gate.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        drop(gathering);
        let mut files: Vec<Arc<Segment>> = Vec::new();
        let mut sync_dir = false;
        for job in &batch {
            sync_dir |= job.sync_dir;
            for f in &job.files {
                if !files.iter().any(|seen| Arc::ptr_eq(seen, f)) {
                    files.push(f.clone());
                }
            }
        }
        let mut result = if poisoned.load(Ordering::SeqCst) {
            Err("an earlier fsync of the Raft log failed".to_string())
        } else {
            Ok(())
        };
        for f in &files {
            if result.is_err() {
                break;
            }
            if let Err(e) = f.file.sync_data() {
                result = Err(format!("fsync of {}: {e}", f.path.display()));
                break;
            }
        }
        if result.is_ok()
            && sync_dir
            && let Err(e) = super::hard::sync_dir(&dir)
        {
            result = Err(format!("fsync of {}: {e}", dir.display()));
        }
        if let Err(e) = &result {
            tracing::error!("the Raft log cannot be made durable ({e}): refusing every further append");
            poisoned.store(true, Ordering::SeqCst);
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::RAFT_LOG_FSYNCS_TOTAL).increment(1);
        let entries: u64 = batch.iter().map(|j| j.entries).sum();
        metrics::counter!(crate::metric_names::RAFT_LOG_ENTRIES_TOTAL).increment(entries);
        for job in batch {
            (job.done)(result.clone().map_err(std::io::Error::other));
        }
    }
}
