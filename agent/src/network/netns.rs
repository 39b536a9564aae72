//! Opening sockets inside a container's network namespace: a dedicated OS thread enters the
//! namespace Docker reports (`SandboxKey`), binds, adds the redirect of service addresses to
//! the proxy (one `iptables` NAT rule, run from that thread so it lands in the container's
//! namespace and goes away with it), and exits; the sockets stay in that namespace and are
//! served from the normal runtime. Never done on a runtime thread, which would stay in the
//! container's namespace.

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

/// Opens every socket of `wants` inside the namespace at `ns`, then makes sure the NAT rule
/// `redirect` (arguments of the `iptables` command after `-t nat`, without `-A`/`-C`) is
/// present there. Fails when the namespace cannot be entered, a socket cannot be opened or
/// the rule added.
pub fn open_in(
    ns: &Path,
    wants: Vec<Want>,
    iptables: &Path,
    redirect: Vec<String>,
) -> io::Result<Vec<Opened>> {
    let ns: PathBuf = ns.to_owned();
    let iptables = iptables.to_owned();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let f = File::open(&ns)?;
            nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let opened = wants
                .into_iter()
                .map(open)
                .collect::<io::Result<Vec<_>>>()?;
            if !redirect.is_empty() {
                ensure_rule(&iptables, &redirect)?;
            }
            Ok(opened)
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Adds the NAT rule unless it is there (a restarted agent finds it in adopted containers).
/// The child inherits the calling thread's network namespace.
fn ensure_rule(iptables: &Path, rule: &[String]) -> io::Result<()> {
    let run = |op: &str| {
        std::process::Command::new(iptables)
            .args(["-w", "-t", "nat", op])
            .args(rule)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
    };
    if run("-C")?.status.success() {
        return Ok(());
    }
    let out = run("-A")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
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

/// Whether this process may do what service networking needs: enter network namespaces
/// (enters its own on a thread) and read the nat table with the `iptables` command. The error
/// is a sentence naming what the agent lacks; agents publish it in their node record.
pub fn check_privilege(iptables: &Path) -> Result<(), String> {
    open_in(
        Path::new("/proc/self/ns/net"),
        Vec::new(),
        iptables,
        Vec::new(),
    )
    .map_err(|e| {
        format!(
            "the agent lacks CAP_SYS_ADMIN (cannot enter network namespaces: {e}); run it as root"
        )
    })?;
    match std::process::Command::new(iptables)
        .args(["-w", "-t", "nat", "-S", "OUTPUT"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "the agent lacks CAP_NET_ADMIN (iptables cannot read the nat table: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the agent lacks the iptables command ({}: {e}); install it (apt-get install iptables)",
            iptables.display()
        )),
    }
}
