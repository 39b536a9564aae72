//! shoal-controller: filled in by later work.
