//! `shoal-consul-fake --listen ADDR` serves a Consul Shoal's store can use.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_binary_serves_a_consul_store() {
    // Port 0: the line it prints names the port it got.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-consul-fake"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start shoal-consul-fake");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read its first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("consul://"))
        .and_then(|w| w.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no consul:// URL in {line:?}"))
        .to_string();
    let store = shoal_store::open_store(&url).await.expect("open the store");
    let rev = store
        .put("/shoal/x", b"1".to_vec(), None)
        .await
        .expect("put");
    let kv = store.get("/shoal/x").await.expect("get").expect("present");
    assert_eq!((kv.value, kv.mod_revision), (b"1".to_vec(), rev));
    child.kill().expect("stop it");
    let _ = child.wait();
}
