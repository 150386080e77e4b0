//! The `ringmaster` command line: run mode (Cyrus master's flags), `check` and `demo`.

#![warn(clippy::undocumented_unsafe_blocks)]

use clap::Parser;

use ringmaster::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Some(Command::Check(args)) => ringmaster::check::run(&args, &mut std::io::stdout()),
        Some(Command::Demo(args)) => ringmaster::demo::run(&args),
        Some(Command::GenerateAssets(args)) => ringmaster::assets::run(&args),
        None => ringmaster::run::run(cli.run),
    };
    std::process::exit(status);
}
