//! Man pages and shell completions, generated from the clap definition by the hidden
//! `ringmaster generate-assets DIR`, so they never drift from the CLI; the package installs
//! what it writes (see docs/packaging.md).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::Cli;

/// The cyrus.conf page. Named apart from Cyrus's own cyrus.conf(5), which cyrus-common ships.
pub const CYRUS_CONF_PAGE: &str = "ringmaster-cyrus.conf.5";
const CYRUS_CONF_ROFF: &str = include_str!("assets/ringmaster-cyrus.conf.5");

/// Sections of ringmaster(8) that clap cannot know: signals, exit status, files.
const MASTER_EXTRA_ROFF: &str = include_str!("assets/ringmaster-extra.8");

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write: DIR/man/*.[58] and DIR/completions/{ringmaster.bash,_ringmaster,ringmaster.fish}.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `ringmaster generate-assets DIR`: writes every page and completion; returns the exit status.
pub fn run(args: &GenerateArgs) -> i32 {
    match generate(&args.dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            0
        }
        Err(err) => {
            eprintln!(
                "ringmaster generate-assets: cannot write into {}: {err}",
                args.dir.display()
            );
            1
        }
    }
}

/// Writes the man pages under `dir/man` and the completions under `dir/completions`;
/// returns the files written.
pub fn generate(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut files = man_pages(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = without_hidden_subcommands(Cli::command());
        files.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "ringmaster",
            &completions,
        )?);
    }
    Ok(files)
}

/// The command the man pages document: built (so subcommands carry their full names), with
/// no `help` subcommand (`--help` is documented on every page).
pub fn documented_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The command as users see it: clap_complete would offer hidden subcommands (this one).
fn without_hidden_subcommands(full: clap::Command) -> clap::Command {
    let visible = clap::Command::new("ringmaster")
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    match full.get_about() {
        Some(about) => visible.about(about.clone()),
        None => visible,
    }
}

/// ringmaster(8) with its extra sections, one page per visible subcommand, the cyrus.conf page.
fn man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let cmd = documented_command();
    let mut files = Vec::new();

    let master = Man::new(cmd.clone()).section("8");
    let path = dir.join(master.get_filename());
    let mut page = Vec::new();
    master.render_title(&mut page)?;
    master.render_name_section(&mut page)?;
    master.render_synopsis_section(&mut page)?;
    master.render_description_section(&mut page)?;
    master.render_options_section(&mut page)?;
    master.render_subcommands_section(&mut page)?;
    page.write_all(MASTER_EXTRA_ROFF.as_bytes())?;
    master.render_version_section(&mut page)?;
    std::fs::write(&path, page)?;
    files.push(path);

    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        files.push(Man::new(sub.clone()).section("8").generate_to(dir)?);
    }

    let path = dir.join(CYRUS_CONF_PAGE);
    std::fs::write(&path, CYRUS_CONF_ROFF)?;
    files.push(path);
    Ok(files)
}
