//! The Makefile's `make test` recipe works on a fresh clone (no `target/` yet).

use std::process::Command;

/// `make -n test` prints the recipe without running it; the directory the output is teed into
/// must be created before the `tee`, or a newcomer's first `make test` loses its summary line.
#[test]
fn make_test_creates_target_before_teeing_into_it() {
    let out = Command::new("make")
        .args(["-n", "--no-print-directory", "test"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tee = stdout
        .find("tee target/test-output.txt")
        .unwrap_or_else(|| panic!("the test recipe tees into target/:\n{stdout}"));
    let mkdir = stdout
        .find("mkdir -p target")
        .unwrap_or_else(|| panic!("the test recipe creates target/:\n{stdout}"));
    assert!(mkdir < tee, "target/ is created before the tee:\n{stdout}");
}
