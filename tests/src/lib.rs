//! shoal-tests: filled in by later work.
