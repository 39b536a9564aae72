//! The Docker CLI as tests read it: running `docker` and sampling `docker ps` for the
//! containers the agent runs for a node (they carry its node label).

use std::process::Command;

use shoal_agent::runtime::LABEL_NODE;

/// `docker ARGS`: what it printed on stdout; fails the test with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether Docker knows the container `id` (stopped ones included).
pub fn exists(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", id])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// One `docker ps` row, in `format` (a Go template such as `{{.ID}}` or `{{.Image}}`, ids
/// untruncated), for each container of `node` matching every `extra` argument (more
/// `--filter`s, `-a` for stopped ones too).
pub fn node_containers(node: &str, format: &str, extra: &[&str]) -> Vec<String> {
    let label = format!("label={LABEL_NODE}={node}");
    let mut args = vec!["ps", "--no-trunc", "--format", format, "--filter", &label];
    args.extend_from_slice(extra);
    docker(&args).lines().map(str::to_string).collect()
}
