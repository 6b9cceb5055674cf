//! End-to-end tests of the `forecourt` binary live in this crate's `tests/` folder.
