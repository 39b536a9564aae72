//! Helpers for tests that need Docker (feature `test-support`): the local test image built
//! from the host's static busybox (no registry is needed), and a guard that removes
//! containers by label even when a test fails.

use std::path::Path;
use std::process::{Command, Stdio};

/// The image docker tests run.
pub const TEST_IMAGE: &str = "shoal-test/busybox:latest";

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Busybox applets linked into the test image.
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "httpd", "wget", "true", "false", "cat", "echo", "ls", "env", "kill", "ps",
    "printf", "test", "nc", "id", "mkdir", "rm", "touch", "date", "hostname",
];

/// Errors building the test image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Docker did not answer.
    #[error("Docker is not reachable (`docker version` failed): {0}")]
    DockerUnreachable(String),
    /// Busybox is not installed.
    #[error(
        "{BUSYBOX} is missing: install Debian's busybox-static (apt-get install busybox-static)"
    )]
    NoBusybox,
    /// A step failed.
    #[error("building {TEST_IMAGE} failed: {0}")]
    Build(String),
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Makes sure Docker answers and [`TEST_IMAGE`] exists, building it with `docker import`
/// from [`BUSYBOX`] when absent (the same recipe as `make image`).
pub fn ensure_test_image() -> Result<(), ImageError> {
    let version = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(ImageError::DockerUnreachable(
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            ));
        }
        Err(e) => return Err(ImageError::DockerUnreachable(e.to_string())),
    }
    if docker_ok(&["image", "inspect", TEST_IMAGE]) {
        return Ok(());
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(ImageError::NoBusybox);
    }
    let dir = tempfile_dir().map_err(|e| ImageError::Build(e.to_string()))?;
    let build = (|| -> std::io::Result<()> {
        let root = dir.join("rootfs");
        for d in ["bin", "tmp", "etc", "www"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
        std::fs::write(root.join("index.html"), "shoal test image\n")?;
        std::fs::write(root.join("www/index.html"), "shoal test image\n")?;
        let tar = dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .args(["-C"])
            .arg(&root)
            .args(["-cf"])
            .arg(&tar)
            .arg(".")
            .status()?
            .success();
        if !ok {
            return Err(std::io::Error::other("tar failed"));
        }
        let out = Command::new("docker")
            .args([
                "import",
                "--change",
                "ENV PATH=/bin",
                "--change",
                "CMD [\"sh\"]",
            ])
            .arg(&tar)
            .arg(TEST_IMAGE)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).to_string(),
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    build.map_err(|e| ImageError::Build(e.to_string()))
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("shoal-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes every container carrying `label` (`key=value`) when dropped.
#[derive(Debug)]
pub struct ContainerGuard {
    label: String,
}

impl ContainerGuard {
    /// A guard for containers labelled `label` (`key=value`).
    pub fn new(label: impl Into<String>) -> Self {
        ContainerGuard {
            label: label.into(),
        }
    }

    /// Removes the containers now.
    pub fn cleanup(&self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.label)])
            .output();
        if let Ok(o) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        self.cleanup();
    }
}
