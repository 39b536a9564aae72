//! shoal-tests: filled in by later work.

pub mod consul_fake;
