//! Child processes of a test (`shoal dev`, agents, controllers): a free loopback port for one
//! to listen on, and stopping one the way an operator would, with a signal and a grace period.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A loopback port free now, for a child process told to listen on `127.0.0.1:<port>`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Sends SIGINT to `child` (so it stops its tasks on the way out), waits up to `grace` for it
/// to exit, then kills it. Does nothing to a process that already exited.
pub fn interrupt(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
