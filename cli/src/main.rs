//! `msb`, the microsandbox command line. A thin shell over the core crate:
//! it parses arguments, calls the SDK, and renders results for humans (or as
//! JSON with `--json`). On failure it prints the error's stable kind and exits
//! non-zero.

mod render;
mod snapshot_cmd;
mod upper_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use microsandbox::MicrosandboxError;

#[derive(Parser)]
#[command(
    name = "msb",
    version,
    about = "microsandbox: microVM sandboxes and their snapshots"
)]
struct Cli {
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and verify snapshot artifacts.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Work with upper-layer files directly.
    #[command(subcommand)]
    Upper(upper_cmd::UpperCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[Runtime]: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Snapshot(cmd) => snapshot_cmd::run(cmd, cli.json).await,
            Command::Upper(cmd) => upper_cmd::run(cmd, cli.json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err, cli.json);
            ExitCode::FAILURE
        }
    }
}

fn report_error(err: &MicrosandboxError, json: bool) {
    if json {
        let body =
            serde_json::json!({ "error": { "kind": err.kind(), "message": err.to_string() } });
        println!("{body}");
    }
    eprintln!("error[{}]: {err}", err.kind());
}
