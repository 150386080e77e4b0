//! The `ringmaster` command line: run mode (Cyrus master's flags), `check` and `demo`.

use clap::Parser;

use ringmaster::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Some(Command::Check(args)) => ringmaster::check::run(&args, &mut std::io::stdout()),
        Some(Command::Demo(_args)) => 0,
        None => 0,
    };
    std::process::exit(status);
}
