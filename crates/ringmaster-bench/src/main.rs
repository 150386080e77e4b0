//! Benchmarks for ringmaster, side by side with Cyrus's own master where it is installed.

fn main() {}
