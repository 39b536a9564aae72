//! Looking for a value where it must never be written: the files under a directory that hold
//! it, binary files included.

use std::path::Path;
use std::process::Command;

/// The files under `dir` holding `needle` (taken as it is, not as a pattern).
pub fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-rlaF", "--", needle])
        .arg(dir)
        .output()
        .expect("grep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}
