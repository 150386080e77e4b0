//! The `ringmaster` command line: run mode (Cyrus master's flags), `check`, `demo`, and the
//! control clients `status`, `reload`, `stop` and `metrics`.

#![warn(clippy::undocumented_unsafe_blocks)]

use clap::Parser;

use ringmaster::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Some(Command::Check(args)) => ringmaster::check::run(&args, &mut std::io::stdout()),
        Some(Command::Demo(args)) => ringmaster::demo::run(&args),
        Some(Command::GenerateAssets(args)) => ringmaster::assets::run(&args),
        Some(Command::Status(args)) => ringmaster::control::client::status(&args),
        Some(Command::Reload(args)) => ringmaster::control::client::reload(&args),
        Some(Command::Stop(args)) => ringmaster::control::client::stop(&args),
        Some(Command::Metrics(args)) => ringmaster::control::client::metrics(&args),
        Some(Command::Upgrade(args)) => ringmaster::control::client::upgrade(&args),
        None => match cli.run.check_upgrade {
            Some(format) => ringmaster::upgrade::check_upgrade(format),
            None => ringmaster::run::run(cli.run),
        },
    };
    std::process::exit(status);
}
