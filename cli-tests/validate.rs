//! `shoal validate` and `shoal schema`, run as the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn shoal(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal runs");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scratch directory for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const WEB: &str =
    "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n";

#[test]
fn the_examples_are_valid() {
    let out = shoal(&["validate", "-f", "manifests/"], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        stdout.contains("manifests/web.yaml: 1 service valid (default/web)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("manifests/stack.yaml: 2 services valid (shop/redis, shop/worker)"),
        "{stdout}"
    );
    // Sorted, one line per file.
    let files: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
    assert!(files.len() >= 7, "{stdout}");
}

#[test]
fn a_bad_file_fails_with_file_line_and_column() {
    let dir = scratch("cli-bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, format!("{WEB}  restart:\n    delay: 5 sec\n")).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, WEB.replace("web", "api")).unwrap();

    let out = shoal(
        &[
            "validate",
            "-f",
            bad.to_str().unwrap(),
            "-f",
            good.to_str().unwrap(),
        ],
        None,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let first = stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "{}:8:12: spec.restart.delay: invalid duration \"5 sec\": expected a number with a unit, e.g. 500ms, 5s, 1m, 1h30m",
            bad.display()
        )
    );
    assert!(
        stderr.contains("8 |     delay: 5 sec\n  |            ^\n"),
        "{stderr}"
    );
    assert!(stderr.contains("1 error in 1 of 2 files"), "{stderr}");
    assert_eq!(
        stdout,
        format!("{}: 1 service valid (default/api)\n", good.display())
    );
}

#[test]
fn stdin_is_named_stdin() {
    let out = shoal(
        &["validate", "-f", "-"],
        Some(&format!("{WEB}  mode: global\n  replicas: 2\n")),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.starts_with("<stdin>:8:13: spec.replicas: replicas cannot be set with mode: global"),
        "{stderr}"
    );

    let out = shoal(&["validate", "-f", "-"], Some(WEB));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "<stdin>: 1 service valid (default/web)\n"
    );
}

#[test]
fn a_missing_path_names_the_path_and_the_reason() {
    let out = shoal(&["validate", "-f", "does/not/exist.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("does/not/exist.yaml: cannot read: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn a_directory_is_walked_and_every_error_reported() {
    let dir = scratch("cli-dir");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        format!("{WEB}---\n{}  replicas: x\n", WEB.replace("web", "b")),
    )
    .unwrap();
    std::fs::write(dir.join("nested/c.json"), "{\"apiVersion\": \"shoal/v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"c\"}, \"spec\": {}}\n").unwrap();
    std::fs::write(dir.join("README.md"), "not a manifest").unwrap();
    let out = shoal(&["validate", "-f", dir.to_str().unwrap()], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let heads: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(dir.to_str().unwrap()))
        .collect();
    assert_eq!(heads.len(), 2, "{stderr}");
    assert!(
        heads[0].contains("a.yaml:14:13: spec.replicas: invalid type"),
        "{stderr}"
    );
    assert!(heads[1].contains("nested/c.json:1:"), "{stderr}");
    assert!(
        heads[1].contains("spec.image: the docker runtime needs an image"),
        "{stderr}"
    );
}

#[test]
fn schema_prints_the_json_schema() {
    let out = shoal(&["schema"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["title"], "Shoal Service");
    assert_eq!(v["additionalProperties"], false);
    assert!(
        v["$defs"]["ServiceSpec"]["properties"]["replicas"].is_object(),
        "{v:#}"
    );
}

#[test]
fn an_unknown_agent_role_is_invalid_input() {
    let out = shoal(
        &[
            "agent",
            "--store",
            "file:///nonexistent",
            "--node-id",
            "n1",
            "--role",
            "boss",
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'boss'") && stderr.contains("manager, worker"),
        "{stderr}"
    );
}
