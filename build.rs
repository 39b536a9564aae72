//! Links the `shoal` binary with packed relative relocations (`DT_RELR`, read by glibc 2.36
//! and later). Most of a position-independent Rust binary's relocations are relative ones:
//! as `.rela.dyn` entries they take over a megabyte, which every process reads at start and
//! keeps mapped; packed, they take a few kilobytes. Each Shoal process, and each of a
//! benchmark's hollow agents, is that much smaller, with address randomisation unchanged.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
