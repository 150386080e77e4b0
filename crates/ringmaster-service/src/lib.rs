//! Write ringmaster (and Cyrus master) workers in Rust: accept loop, status notes, graceful exit.
