//! `ringmaster check`: validate a configuration and say what would run.

use std::io::Write;

use crate::cli::CheckArgs;

/// Runs the check, printing to `out`; returns the process exit status.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> i32 {
    let _ = (args, out);
    0
}
