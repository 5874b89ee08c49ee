//! `canary-split`: the operator's view of the filter, built from the same core. This file is the
//! command line (clap) and the dispatch; each command's flags and work live in its own module.

mod commands;
mod config_file;
mod gateway;
mod gateway_api;
mod guard;
mod judge;
mod preset;
mod prometheus;
mod rollout;
mod status;
mod target;
mod text_edit;
mod weight;

use std::ffi::OsStr;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Shown under every command's help: scripts and CI branch on these.
const EXIT_STATUS: &str = "Exit status: 0 success; 1 a verdict (config refused, canary rolled back, rollout not \
started) or an error on the way (a file, Prometheus); 2 a usage mistake.";

#[derive(Parser)]
#[command(
    name = "canary-split",
    version,
    about = "The operator's tool for the canary-split filter: check a config, explain a decision, show and drive a rollout",
    after_help = EXIT_STATUS,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(commands::check::CheckArgs),
    Explain(commands::explain::ExplainArgs),
    Status(status::StatusArgs),
    Rollout(rollout::RolloutArgs),
    Token(commands::token::TokenArgs),
    Completions(CompletionsArgs),
}

/// Print a shell completion script
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary-split completions bash > ~/.local/share/bash-completion/completions/canary-split
  canary-split completions zsh > ~/.zfunc/_canary-split      (with fpath+=~/.zfunc before compinit)
  canary-split completions fish > ~/.config/fish/completions/canary-split.fish")]
struct CompletionsArgs {
    /// The shell to complete in
    shell: clap_complete::Shell,
}

/// How a command failed.
pub enum Failure {
    /// A verdict, or an error met on the way: the message goes to stderr, exit status 1.
    Refused(String),
    /// A verdict in machine-readable form: the report goes to stdout, exit status 1.
    Report(String),
    /// A usage mistake seen only once the config is read: clap's error, exit status 2.
    Usage(Box<clap::Error>),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Refused(message)
    }
}

/// A flag `subcommand` needs in the case at hand, which clap cannot require up front (a rollout
/// that only prints kubectl commands needs no Prometheus): a usage mistake, as clap reports one.
pub fn missing(subcommand: &str, message: &str) -> Failure {
    let mut command = Cli::command();
    command.build();
    let error = match command.find_subcommand_mut(subcommand) {
        Some(subcommand) => subcommand.error(ErrorKind::MissingRequiredArgument, message),
        None => command.error(ErrorKind::MissingRequiredArgument, message),
    };
    Failure::Usage(Box::new(error))
}

/// `--output`: text for people, JSON for scripts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A duration on the command line: 90s, 5m, 1h30m, 500ms.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// A duration that must not be zero (an interval, a window, a poll period).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        zero if zero.is_zero() => Err("must be more than 0".to_owned()),
        duration => Ok(duration),
    }
}

pub fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(number) if number.is_finite() && number >= 0.0 => Ok(number),
        _ => Err("expected a number, 0 or more".to_owned()),
    }
}

/// Lists a flag's values in help and completions, and leaves refusing any other to the command,
/// whose message says what it expected in the project's words.
#[derive(Clone)]
pub struct OneOf(pub &'static [&'static str]);

impl TypedValueParser for OneOf {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(command, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().map(|value| PossibleValue::new(*value))))
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Check(args) => commands::check::check(&args),
        Command::Explain(args) => commands::explain::explain(&args).map_err(Failure::from),
        Command::Status(args) => status::status(&args).map_err(Failure::from),
        Command::Rollout(args) => rollout::rollout(&args),
        Command::Token(args) => commands::token::token(&args).map_err(Failure::from),
        Command::Completions(args) => Ok(completions(args.shell)),
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
        Err(Failure::Report(report)) => {
            print!("{report}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(error)) => error.exit(),
    }
}

fn completions(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "canary-split", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    // clap_complete's bash script spells a subcommand's state two ways when the name has a hyphen
    // (`canary__split__subcmd__status` where it is set, `canary__subcmd__split__subcmd__status`
    // where it is matched), so no subcommand's flags would complete: clap-rs/clap#6421, still open.
    match shell {
        clap_complete::Shell::Bash => script.replace("canary__subcmd__split__", "canary__split__"),
        _ => script,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
