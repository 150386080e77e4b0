//! The demo worker: a small line-echo service built on ringmaster-service.

fn main() {}
