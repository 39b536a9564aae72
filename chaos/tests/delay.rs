//! Latency without netem: a degraded host's packets really wait. A TCP echo server runs in a
//! host namespace; round trips to it from the harness's namespace are measured before, while
//! the host's link is degraded (its egress held by the NFQUEUE delay line) and after the heal.
//! Needs root (namespaces, iptables); without it fails with the reason, never skips.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use shoal_chaos::netns::{Net, enter};

fn echo_server(ns: String, addr: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns).expect("enter the host namespace");
        let listener = TcpListener::bind(addr).expect("bind the echo server");
        tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
            });
        }
    });
    rx.recv().expect("echo server up");
}

/// Median round trip of one byte over `c`, in milliseconds, over `n` tries.
fn median_rtt_ms(c: &mut TcpStream, n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

#[test]
fn a_degraded_host_answers_late_and_on_time_again_after_the_heal() {
    let id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut net = Net::create(&id, 2).unwrap_or_else(|e| panic!("{e}"));
    let addr = SocketAddr::new(net.hosts[0].ip.into(), 7001);
    echo_server(net.hosts[0].ns.clone(), addr);
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let before = median_rtt_ms(&mut c, 11);

    net.degrade(0, 150, 0).expect("degrade h0");
    let degraded = median_rtt_ms(&mut c, 11);
    net.heal(0).expect("heal h0");
    let after = median_rtt_ms(&mut c, 11);
    let delayed = net.delayed();
    println!(
        "round trip to h0: {before:.2} ms, degraded by 150 ms: {degraded:.2} ms, healed: {after:.2} ms; \
         {} packets delayed, {:.1} ms each on average",
        delayed.packets,
        delayed.mean_ms()
    );
    // The echo leaves h0 through the delay: 150 ms ± 37 ms.
    assert!(degraded >= 110.0, "degraded round trip {degraded} ms");
    assert!(degraded > before + 100.0, "{before} -> {degraded} ms");
    assert!(after < degraded / 2.0, "healed round trip {after} ms");
    assert!(delayed.packets >= 11, "{delayed:?}");
    assert!(delayed.mean_ms() >= 100.0, "{delayed:?}");
}
