use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// spillway's control plane.
#[derive(Parser)]
#[command(name = "spillway-control", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate routing config files; prints every problem with its file and path, exits 1 if
    /// any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Check { files } => {
            let (report, ok) = spillway_controlplane::check::check(&files);
            print!("{report}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}
