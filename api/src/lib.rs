//! shoal-api: filled in by later work.
