//! The hosts of a chaos run: network namespaces `shc-<run>-h<N>` joined by veth pairs to a
//! bridge inside a namespace of their own (`shc-<run>-net`), on a private /24 the run picks,
//! plus one veth from the root namespace (`shc<run>`) so the harness — workload and checker,
//! never partitioned — reaches the hosts. Faults on the network are iptables rules and qdiscs
//! inside the host namespaces, so nothing outside the run is touched.
//!
//! [`Net`] tears everything down when dropped (also on panic). [`sweep`] removes what runs
//! killed with -9 left behind: namespaces, links and processes of every run whose owning
//! process is gone (its pid file names it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::delay::{DelayLine, DelaySpec, DelayStats};

/// Prefix of every namespace a run creates.
pub const NS_PREFIX: &str = "shc-";
/// Directory of the pid files naming the process that owns each run.
const RUNS_DIR: &str = "/run/shoal-chaos";

/// Errors setting up or changing the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command could not be run or failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// stderr or the OS error.
        message: String,
    },
    /// Not running as root: namespaces cannot be created.
    #[error(
        "the chaos harness creates network namespaces and must run as root (uid {uid}); \
         run it with sudo"
    )]
    NotRoot {
        /// Effective uid.
        uid: u32,
    },
    /// No free private /24 was found.
    #[error("no free 10.213.x.0/24 subnet for the run")]
    NoSubnet,
    /// A file-system operation failed.
    #[error("chaos network i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Moves the calling thread (only it) into network namespace `ns` (`/run/netns/<ns>`): the
/// sockets it opens from then on belong to that namespace.
pub fn enter(ns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// One host: a namespace with one address on the run's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// Index (0-based).
    pub index: usize,
    /// Namespace name.
    pub ns: String,
    /// Address on the bridge.
    pub ip: Ipv4Addr,
}

impl Host {
    /// Runs `program args` inside this host's namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NetError> {
        let mut full = vec!["netns", "exec", self.ns.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

/// The network of one run; removed on drop.
#[derive(Debug)]
pub struct Net {
    /// Run id (6 hex digits).
    pub run_id: String,
    /// The hosts.
    pub hosts: Vec<Host>,
    /// The harness's own address (root namespace).
    pub observer_ip: Ipv4Addr,
    bridge_ns: String,
    root_link: String,
    /// The delay running on each degraded host.
    delays: BTreeMap<usize, DelayLine>,
    /// Figures of the delays stopped so far.
    delayed: DelayStats,
}

fn is_root() -> Result<(), NetError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        Ok(())
    } else {
        Err(NetError::NotRoot { uid })
    }
}

fn pid_file(run_id: &str) -> PathBuf {
    PathBuf::from(RUNS_DIR).join(format!("{run_id}.pid"))
}

fn pick_subnet(run_id: &str) -> Result<u8, NetError> {
    let routes = String::from_utf8_lossy(&run("ip", &["-4", "route", "show"])?.stdout).to_string();
    let start = u8::from_str_radix(&run_id[..2], 16).unwrap_or(0) % 250;
    (0..250u16)
        .map(|i| ((u16::from(start) + i) % 250) as u8 + 1)
        .find(|n| !routes.contains(&format!("10.213.{n}.")))
        .ok_or(NetError::NoSubnet)
}

impl Net {
    /// Creates `hosts` namespaces for run `run_id` (after sweeping dead runs).
    pub fn create(run_id: &str, hosts: usize) -> Result<Net, NetError> {
        is_root()?;
        sweep()?;
        std::fs::create_dir_all(RUNS_DIR)?;
        std::fs::write(pid_file(run_id), std::process::id().to_string())?;
        let subnet = pick_subnet(run_id)?;
        let mut net = Net {
            run_id: run_id.to_string(),
            hosts: Vec::new(),
            observer_ip: Ipv4Addr::new(10, 213, subnet, 254),
            bridge_ns: format!("{NS_PREFIX}{run_id}-net"),
            root_link: format!("shc{run_id}"),
            delays: BTreeMap::new(),
            delayed: DelayStats::default(),
        };
        // From here on, Drop cleans up whatever was created.
        let b = net.bridge_ns.clone();
        run("ip", &["netns", "add", &b])?;
        run("ip", &["-n", &b, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &b, "link", "set", "br0", "up"])?;
        for index in 0..hosts {
            let host = Host {
                index,
                ns: format!("{NS_PREFIX}{run_id}-h{index}"),
                ip: Ipv4Addr::new(10, 213, subnet, index as u8 + 1),
            };
            let port = format!("v{run_id}h{index}");
            run("ip", &["netns", "add", &host.ns])?;
            net.hosts.push(host.clone());
            run(
                "ip",
                &[
                    "-n", &b, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &host.ns,
                ],
            )?;
            run(
                "ip",
                &["-n", &b, "link", "set", &port, "master", "br0", "up"],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &host.ns,
                    "addr",
                    "add",
                    &format!("{}/24", host.ip),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &host.ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &host.ns, "link", "set", "lo", "up"])?;
        }
        let port = format!("v{run_id}c");
        let root = net.root_link.clone();
        run(
            "ip",
            &[
                "link", "add", &root, "type", "veth", "peer", "name", &port, "netns", &b,
            ],
        )?;
        run(
            "ip",
            &["-n", &b, "link", "set", &port, "master", "br0", "up"],
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.observer_ip),
                "dev",
                &root,
            ],
        )?;
        run("ip", &["link", "set", &root, "up"])?;
        Ok(net)
    }

    /// Cuts all traffic between hosts `a` and `b` (both directions, both namespaces).
    pub fn partition(&self, a: usize, b: usize) -> Result<(), NetError> {
        for (from, to) in [(a, b), (b, a)] {
            let peer = self.hosts[to].ip.to_string();
            let h = &self.hosts[from];
            h.exec("iptables", &["-I", "INPUT", "-s", &peer, "-j", "DROP"])?;
            h.exec("iptables", &["-I", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Cuts host `h` off from every etcd client port (its processes keep running).
    pub fn cut_from_etcd(&self, h: usize, client_port: u16) -> Result<(), NetError> {
        let port = client_port.to_string();
        let host = &self.hosts[h];
        host.exec(
            "iptables",
            &["-I", "OUTPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"],
        )?;
        Ok(())
    }

    /// Degrades host `h`'s link: every packet it sends is held `delay_ms` (± a quarter) by a
    /// [`DelayLine`] on NFQUEUE `100 + h`, and `loss_pct` % of the packets it sends and
    /// receives are dropped (iptables `statistic`).
    pub fn degrade(&mut self, h: usize, delay_ms: u32, loss_pct: u32) -> Result<(), NetError> {
        let host = self.hosts[h].clone();
        let queue = 100 + h as u16;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.delays.entry(h) {
            let spec = DelaySpec {
                delay: Duration::from_millis(delay_ms.into()),
                jitter: Duration::from_millis((delay_ms / 4).into()),
                seed: u64::from(delay_ms) << 8 | h as u64,
            };
            slot.insert(DelayLine::start(&host.ns, queue, spec)?);
        }
        let queue = queue.to_string();
        host.exec(
            "iptables",
            &[
                "-A",
                "OUTPUT",
                "-o",
                "eth0",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
        )?;
        if loss_pct == 0 {
            return Ok(());
        }
        let p = format!("{:.3}", f64::from(loss_pct) / 100.0);
        for chain in ["INPUT", "OUTPUT"] {
            host.exec(
                "iptables",
                &[
                    "-I",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every fault on host `h`'s network (rules first, then the delay releases what
    /// it holds).
    pub fn heal(&mut self, h: usize) -> Result<(), NetError> {
        self.hosts[h].exec("iptables", &["-F"])?;
        if let Some(line) = self.delays.remove(&h) {
            self.delayed.add(line.stop());
        }
        Ok(())
    }

    /// Removes every network fault.
    pub fn heal_all(&mut self) -> Result<(), NetError> {
        for h in 0..self.hosts.len() {
            self.heal(h)?;
        }
        Ok(())
    }

    /// Packets delayed so far by degraded links (delays still running not counted).
    pub fn delayed(&self) -> DelayStats {
        self.delayed
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_run(&self.run_id);
    }
}

/// Kills every process left in the namespaces of `run_id` and removes its namespaces, its
/// root-namespace link and its pid file.
pub fn remove_run(run_id: &str) {
    let prefix = format!("{NS_PREFIX}{run_id}-");
    for ns in namespaces().into_iter().filter(|n| n.starts_with(&prefix)) {
        kill_all_in(&ns);
        let _ = run("ip", &["netns", "del", &ns]);
    }
    let _ = run("ip", &["link", "del", &format!("shc{run_id}")]);
    let _ = std::fs::remove_file(pid_file(run_id));
}

/// SIGKILLs every process inside namespace `ns`.
pub fn kill_all_in(ns: &str) {
    if let Ok(out) = run("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn namespaces() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_alive(run_id: &str) -> bool {
    std::fs::read_to_string(pid_file(run_id))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// Removes the leftovers of every earlier run whose owner process is gone; returns their ids.
pub fn sweep() -> Result<Vec<String>, NetError> {
    is_root()?;
    let mut runs: Vec<String> = namespaces()
        .iter()
        .filter_map(|n| n.strip_prefix(NS_PREFIX))
        .filter_map(|rest| rest.split_once('-').map(|(id, _)| id.to_string()))
        .collect();
    let links = String::from_utf8_lossy(&run("ip", &["-o", "link", "show"])?.stdout).to_string();
    runs.extend(links.lines().filter_map(|l| {
        let name = l.split(": ").nth(1)?.split('@').next()?;
        name.strip_prefix("shc").map(str::to_string)
    }));
    runs.sort();
    runs.dedup();
    let dead: Vec<String> = runs.into_iter().filter(|id| !owner_alive(id)).collect();
    for id in &dead {
        remove_run(id);
    }
    Ok(dead)
}
