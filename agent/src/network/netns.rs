//! Opening sockets inside a container's network namespace: a dedicated OS thread enters the
//! namespace Docker reports (`SandboxKey`), binds, and exits; the sockets stay in that
//! namespace and are served from the normal runtime. Never done on a runtime thread, which
//! would stay in the container's namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// A socket to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A UDP socket.
    Udp(SocketAddr),
}

/// A socket opened in a namespace (non-blocking, ready for tokio's `from_std`).
#[derive(Debug)]
pub enum Opened {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
}

/// Opens every socket of `wants` inside the namespace at `ns` (one result per socket).
/// Fails as a whole only when the namespace cannot be entered.
pub fn open_in(ns: &Path, wants: Vec<Want>) -> io::Result<Vec<io::Result<Opened>>> {
    let ns: PathBuf = ns.to_owned();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let f = File::open(&ns)?;
            nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(wants.into_iter().map(open).collect())
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

fn open(w: Want) -> io::Result<Opened> {
    match w {
        Want::Tcp(a) => {
            let l = TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            Ok(Opened::Tcp(l))
        }
        Want::Udp(a) => {
            let u = UdpSocket::bind(a)?;
            u.set_nonblocking(true)?;
            Ok(Opened::Udp(u))
        }
    }
}

/// Whether this process may enter network namespaces: enters its own on a thread. The error
/// names the missing privilege.
pub fn check_privilege() -> Result<(), String> {
    open_in(Path::new("/proc/self/ns/net"), Vec::new())
        .map(|_| ())
        .map_err(|e| {
            format!(
                "cannot enter network namespaces ({e}): service names and the routing mesh need \
                 CAP_SYS_ADMIN (run the agent as root)"
            )
        })
}
