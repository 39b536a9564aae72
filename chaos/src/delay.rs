//! Added latency without `sch_netem`. The kernel of the machine the harness was built on has
//! no `netem` qdisc (nor `fq`, the qdisc that honours departure times set by a BPF program),
//! but it has NFQUEUE (`nfnetlink_queue`): an iptables rule in a host's namespace hands every
//! packet the host sends on its link (`OUTPUT -o eth0`) to a netlink queue; a thread of the
//! harness, entered into that namespace, holds each packet for the delay (± jitter, in order:
//! a packet never leaves before the one queued ahead of it) and then accepts it, so the kernel
//! sends it on unchanged. This is the delay of a slow link on the host's egress, as `tc qdisc
//! add dev eth0 root netem delay D J` would add.
//!
//! The rule carries `--queue-bypass` and the queue is fail-open: with no reader (the harness
//! gone) or a full kernel queue, packets pass undelayed instead of being dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::netns::NetError;

/// Packets a delay line held, and for how long in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DelayStats {
    /// Packets delayed.
    pub packets: u64,
    /// Sum of the time they were held, in milliseconds.
    pub held_ms: f64,
}

impl DelayStats {
    /// Adds another line's figures.
    pub fn add(&mut self, other: DelayStats) {
        self.packets += other.packets;
        self.held_ms += other.held_ms;
    }

    /// Mean time a packet was held, in milliseconds (0 with none).
    pub fn mean_ms(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.held_ms / self.packets as f64
        }
    }
}

/// The shape of a delay.
#[derive(Debug, Clone, Copy)]
pub struct DelaySpec {
    /// Mean delay.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly within ± this.
    pub jitter: Duration,
    /// Seed of the jitter.
    pub seed: u64,
}

/// A running delay on one namespace's NFQUEUE; stopped (held packets released) on drop.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<DelayStats>>,
}

impl DelayLine {
    /// Starts reading NFQUEUE `queue` inside namespace `ns` (`/run/netns/<ns>`), delaying every
    /// packet queued there by `spec`. The iptables rule that queues packets is the caller's.
    pub fn start(ns: &str, queue: u16, spec: DelaySpec) -> Result<DelayLine, NetError> {
        let ns_name = ns.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("delay-{ns}"))
            .spawn(move || match open_queue(&ns_name, queue) {
                Ok(q) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(q, queue, spec, &flag)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    DelayStats::default()
                }
            })
            .map_err(NetError::Io)?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("the delay thread ended".into()));
        let line = DelayLine {
            stop,
            thread: Some(thread),
        };
        match ready {
            Ok(()) => Ok(line),
            Err(message) => Err(NetError::Command {
                command: format!("nfqueue {queue} in {ns}"),
                message,
            }),
        }
    }

    /// Stops the line, releasing every packet it holds, and returns its figures.
    pub fn stop(mut self) -> DelayStats {
        self.finish()
    }

    fn finish(&mut self) -> DelayStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.finish();
    }
}

fn open_queue(ns: &str, queue: u16) -> std::io::Result<nfq::Queue> {
    // Only this thread enters the namespace; the queue's socket stays bound to it.
    crate::netns::enter(ns)?;
    let mut q = nfq::Queue::open()?;
    q.bind(queue)?;
    // Metadata only: the packet is accepted unchanged, its bytes need not be copied.
    q.set_copy_range(queue, 0)?;
    q.set_queue_max_len(queue, 8192)?;
    q.set_fail_open(queue, true)?;
    q.set_nonblocking(true);
    Ok(q)
}

fn serve(mut q: nfq::Queue, queue: u16, spec: DelaySpec, stop: &AtomicBool) -> DelayStats {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut held: VecDeque<(Instant, Instant, nfq::Message)> = VecDeque::new();
    let mut stats = DelayStats::default();
    let mut last_due = Instant::now();
    let jitter_us = spec.jitter.as_micros() as u64;
    while !stop.load(Ordering::SeqCst) {
        loop {
            match q.recv() {
                Ok(mut m) => {
                    m.set_verdict(nfq::Verdict::Accept);
                    let j = rng.random_range(0..=2 * jitter_us);
                    let d = (spec.delay + Duration::from_micros(j))
                        .saturating_sub(Duration::from_micros(jitter_us));
                    let now = Instant::now();
                    last_due = last_due.max(now + d);
                    held.push_back((now, last_due, m));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(queue, error = %e, "delay queue read failed");
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(_, due, _)| *due <= now) {
            if let Some((since, _, m)) = held.pop_front() {
                stats.packets += 1;
                stats.held_ms += since.elapsed().as_secs_f64() * 1000.0;
                let _ = q.verdict(m);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    for (since, _, m) in held.drain(..) {
        stats.packets += 1;
        stats.held_ms += since.elapsed().as_secs_f64() * 1000.0;
        let _ = q.verdict(m);
    }
    // Whatever was queued since the last read leaves at once (unbinding would drop it).
    while let Ok(mut m) = q.recv() {
        m.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(m);
    }
    let _ = q.unbind(queue);
    stats
}
