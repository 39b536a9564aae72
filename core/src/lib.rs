//! shoal-core: filled in by later work.
