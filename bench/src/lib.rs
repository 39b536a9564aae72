//! shoal-bench: filled in by later work.
