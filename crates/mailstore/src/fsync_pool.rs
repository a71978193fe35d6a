//! Long-lived threads that run the fsyncs of a delivery batch several at once.
//!
//! A journalling file system (ext4, XFS) commits concurrent fsyncs together, so
//! syncing a batch's staging files in parallel costs about one journal commit
//! instead of one per file. The threads are made once, when a batch first needs
//! them, and wait for work afterwards: a thread per fsync (or per batch) would
//! cost a `clone3` and its stack set-up for every message delivered.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// Most threads that fsync at once, for all the mailboxes of a process.
pub(crate) const SYNC_THREADS: usize = 16;

/// One file to sync, and where to say how it went.
struct Job {
    index: usize,
    file: Arc<File>,
    done: mpsc::Sender<(usize, io::Result<()>)>,
}

/// The queue the threads take work from.
struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State {
            jobs: VecDeque::new(),
            threads: 0,
            idle: 0,
        }),
        work: Condvar::new(),
    })
}

/// Fsyncs every file (`sync_all`), several at once; one result per file, by its
/// index, in no particular order. The calling thread syncs files too.
pub(crate) fn sync_all(files: Vec<(usize, Arc<File>)>) -> Vec<(usize, io::Result<()>)> {
    let mut files = files.into_iter();
    let Some((first_index, first)) = files.next() else {
        return Vec::new();
    };
    let rest: Vec<(usize, Arc<File>)> = files.collect();
    let (done, results) = mpsc::channel();
    let mut unserved = Vec::new();
    if !rest.is_empty() {
        let pool = pool();
        let mut state = pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        // One thread for each file beyond the caller's, up to the limit.
        let wanted = rest.len().min(SYNC_THREADS);
        while state.threads < wanted {
            let spawned = std::thread::Builder::new()
                .name("qs-fsync".into())
                .spawn(move || work(pool));
            match spawned {
                Ok(_) => state.threads += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start an fsync thread");
                    break;
                }
            }
        }
        if state.threads == 0 {
            // No thread to be had: the caller syncs them all itself.
            unserved = rest;
        } else {
            let jobs = rest.len();
            for (index, file) in rest {
                state.jobs.push_back(Job {
                    index,
                    file,
                    done: done.clone(),
                });
            }
            drop(state);
            // One thread woken per file: waking them all would send the idle
            // ones back to sleep for nothing.
            for _ in 0..jobs {
                pool.work.notify_one();
            }
        }
    }
    drop(done);
    let mut out = vec![(first_index, first.sync_all())];
    out.extend(
        unserved
            .into_iter()
            .map(|(index, file)| (index, file.sync_all())),
    );
    out.extend(results.iter());
    out
}

/// A pool thread: sync whatever is queued, wait when nothing is.
fn work(pool: &Pool) {
    loop {
        let job = {
            let mut state = pool.state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                state.idle += 1;
                state = pool
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.idle -= 1;
            }
        };
        let result = job.file.sync_all();
        // Our reference goes before the answer: the caller may then drop the last
        // one, and with it the file's lock.
        let Job { index, file, done } = job;
        drop(file);
        let _ = done.send((index, result));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn every_file_gets_one_result_and_threads_are_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = |n: usize| -> Vec<(usize, Arc<File>)> {
            (0..n)
                .map(|i| {
                    let path = tmp.path().join(format!("f{i}"));
                    let mut file = File::create(path).unwrap();
                    file.write_all(b"x").unwrap();
                    (i, Arc::new(file))
                })
                .collect()
        };
        for round in 0..5 {
            let mut results = sync_all(open(40));
            results.sort_by_key(|(i, _)| *i);
            let indexes: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
            assert_eq!(indexes, (0..40).collect::<Vec<_>>(), "round {round}");
            assert!(results.iter().all(|(_, r)| r.is_ok()));
        }
        let threads = pool().state.lock().unwrap().threads;
        assert!(
            (1..=SYNC_THREADS).contains(&threads),
            "{threads} threads after 5 batches"
        );
    }

    #[test]
    fn nothing_to_sync_is_no_work() {
        assert!(sync_all(Vec::new()).is_empty());
    }

    #[test]
    fn the_pool_holds_no_file_after_the_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let files: Vec<(usize, Arc<File>)> = (0..4)
            .map(|i| {
                (
                    i,
                    Arc::new(File::create(tmp.path().join(format!("g{i}"))).unwrap()),
                )
            })
            .collect();
        let kept: Vec<Arc<File>> = files.iter().map(|(_, f)| Arc::clone(f)).collect();
        assert_eq!(sync_all(files).len(), 4);
        for file in &kept {
            assert_eq!(Arc::strong_count(file), 1);
        }
    }
}
