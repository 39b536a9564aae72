//! Giving back the memory a burst leaves behind. mimalloc keeps each thread's freed blocks
//! in that thread's pages: a block freed by another thread (a task runner that started on
//! one tokio worker and finished on the other) is only counted free when its owning thread
//! next allocates from that page, and a page is only returned to the system once all of its
//! blocks are known to be free. After a burst, a hollow-node agent that goes quiet kept
//! pages that were free but never collected. Every tokio worker therefore collects its own
//! heap when it runs out of work ([`collect_when_idle`]), at most once per
//! [`COLLECT_EVERY`], which is what mimalloc's documentation advises for "a long running
//! thread [that] allocates a lot of blocks that are freed by other threads".

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Least time between two collections of one thread's heap.
pub const COLLECT_EVERY: Duration = Duration::from_secs(2);

thread_local! {
    static LAST_COLLECTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called as a tokio worker parks: collects the thread's heap when the last collection is
/// [`COLLECT_EVERY`] old (a thread that keeps working collects when it next runs out of
/// work; parking is frequent under load, so the check is one clock read).
pub fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECTED.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        collect();
    }
}

/// Collects the calling thread's heap: blocks freed by other threads are taken back, pages
/// left empty go back to the system at once.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: `mi_collect` has no precondition: it works on the calling thread's own heap
    // and on mimalloc's shared arenas under mimalloc's own synchronisation, and the global
    // allocator of this binary is mimalloc (`main.rs`), so the heap it collects is the one
    // every allocation of this thread came from.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's anonymous resident memory, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_thread_gives_back_what_others_freed_once_it_collects() {
        // A hollow-node agent's burst in small: one thread allocates many small blocks
        // (runners), another frees them, and the first one then does nothing.
        const BLOCKS: usize = 128 * 1024;
        let (to_owner, owner_rx) = std::sync::mpsc::channel::<()>();
        let (to_test, test_rx) = std::sync::mpsc::channel::<Vec<Box<[u8; 1024]>>>();
        let owner = std::thread::spawn(move || {
            let blocks: Vec<Box<[u8; 1024]>> =
                (0..BLOCKS).map(|i| Box::new([i as u8; 1024])).collect();
            to_test.send(blocks).unwrap();
            owner_rx.recv().unwrap();
            collect_when_idle();
            owner_rx.recv().unwrap();
        });
        let blocks = test_rx.recv().unwrap();
        let with_blocks = rss_anon_kib();
        std::thread::spawn(move || drop(blocks)).join().unwrap();
        let freed_elsewhere = rss_anon_kib();
        to_owner.send(()).unwrap();
        let mut collected = rss_anon_kib();
        for _ in 0..100 {
            if with_blocks.saturating_sub(collected) >= 64 * 1024 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            collected = rss_anon_kib();
        }
        to_owner.send(()).unwrap();
        owner.join().unwrap();
        eprintln!(
            "anonymous memory: {with_blocks} KiB with 128 MiB of blocks, {freed_elsewhere} KiB \
             once another thread freed them, {collected} KiB once their thread collected"
        );
        assert!(
            with_blocks.saturating_sub(freed_elsewhere) < 64 * 1024,
            "blocks freed by another thread are kept until their own thread collects \
             ({with_blocks} → {freed_elsewhere} KiB): if not, this module is not needed"
        );
        assert!(
            with_blocks.saturating_sub(collected) >= 64 * 1024,
            "the collection gave back less than half: {with_blocks} → {collected} KiB"
        );
    }
}
