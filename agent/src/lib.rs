//! shoal-agent: filled in by later work.
