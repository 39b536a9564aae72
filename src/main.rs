//! Shoal command-line entry point.

fn main() {}
