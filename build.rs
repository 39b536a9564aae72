//! Links the `shoal` binary with packed relative relocations and its hot functions together.
//!
//! Packed relative relocations (`DT_RELR`, read by glibc 2.36 and later): most of a
//! position-independent Rust binary's relocations are relative ones; as `.rela.dyn` entries
//! they take over a megabyte, which every process reads at start and keeps mapped; packed,
//! they take a few kilobytes. Address randomisation is unchanged.
//!
//! Hot functions first: `link/hot-functions.txt` lists the functions a hollow agent and a
//! controller execute (`scripts/hot-functions.sh` records them with callgrind), and the
//! linker places them together at the start of the code. The kernel maps up to 64 KB around
//! each page of code a process touches, so code spread over the whole binary keeps most of it
//! resident in every process; gathered, a long-running process keeps a few megabytes. A
//! function renamed since the list was made is simply not placed (no warning). The list names
//! this target's functions, and the option is LLD's, the linker Rust uses on it since 1.90.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let hot = format!("{dir}/link/hot-functions.txt");
        println!("cargo:rustc-link-arg-bin=shoal=-Wl,--symbol-ordering-file={hot}");
        println!("cargo:rustc-link-arg-bin=shoal=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-functions.txt");
}
