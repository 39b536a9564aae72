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
    #[error("building a test image failed: {0}")]
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
    ensure_image(TEST_IMAGE, |_| Ok(()))
}

/// The image whose tasks can resolve names: [`TEST_IMAGE`]'s busybox plus Debian's
/// dynamically linked `/usr/bin/wget` and `/usr/bin/getent`, the libraries `ldd` lists for
/// them, glibc's resolver modules and an `nsswitch.conf` (`hosts: files dns`). Call the
/// clients by full path: busybox `sh` runs its own applets for bare names.
pub const RESOLVER_IMAGE: &str = "shoal-test/resolver:latest";

/// Dynamically linked clients copied into [`RESOLVER_IMAGE`].
pub const RESOLVER_CLIENTS: &[&str] = &["/usr/bin/wget", "/usr/bin/getent"];

/// glibc's name service modules the clients load at run time (not listed by `ldd`).
pub const RESOLVER_LIBS: &[&str] = &["libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2"];

/// Makes sure [`RESOLVER_IMAGE`] exists (same recipe as `make resolver-image`).
pub fn ensure_resolver_image() -> Result<(), ImageError> {
    ensure_image(RESOLVER_IMAGE, add_resolver_clients)
}

/// Copies the clients, their libraries and the resolver modules into `root`.
fn add_resolver_clients(root: &Path) -> std::io::Result<()> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for c in RESOLVER_CLIENTS {
        files.push(c.into());
        let out = Command::new("ldd").arg(c).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line
                .split("=>")
                .last()
                .and_then(|r| r.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(p) = path {
                files.push(p.into());
            }
        }
    }
    let libdir = files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "libc.so.6"))
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .ok_or_else(|| std::io::Error::other("ldd did not list libc.so.6"))?;
    files.extend(RESOLVER_LIBS.iter().map(|l| libdir.join(l)));
    for f in files {
        let rel = f.strip_prefix("/").unwrap_or(&f);
        let dest = root.join(rel);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d)?;
        }
        // Follow symlinks: the image gets the real file under the name asked for.
        std::fs::copy(&f, &dest)?;
    }
    std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    Ok(())
}

/// Makes sure Docker answers and `tag` exists, building it when absent from the busybox
/// rootfs plus what `extra` adds.
fn ensure_image(
    tag: &str,
    extra: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), ImageError> {
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
    if docker_ok(&["image", "inspect", tag]) {
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
        extra(&root)?;
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
            .arg(tag)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).to_string(),
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    build.map_err(|e| ImageError::Build(format!("{tag}: {e}")))
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shoal-image-{}-{n}", std::process::id()));
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
