//! `msb`, the microsandbox command line. A thin shell over the core crate:
//! it parses arguments, calls the SDK, and renders results for humans (or as
//! JSON with `--json`). On failure it prints the error's stable kind and exits
//! non-zero; `exec` and `run` exit with the command's own status.

mod doctor;
mod image_cmd;
mod render;
mod sandbox_cmd;
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
    /// Create a sandbox and boot it.
    Create {
        name: String,
        #[command(flatten)]
        opts: sandbox_cmd::CreateOpts,
    },
    /// Run a command in a running sandbox: msb exec NAME -- CMD ARGS…
    Exec {
        name: String,
        #[command(flatten)]
        opts: sandbox_cmd::ExecOpts,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Boot a throwaway sandbox, run one command, remove it: msb run IMAGE -- CMD ARGS…
    Run {
        image: String,
        #[command(flatten)]
        network: sandbox_cmd::NetworkOpts,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Stop a sandbox cleanly.
    Stop { name: String },
    /// Boot a stopped sandbox again (a paused one resumes).
    Start { name: String },
    /// Continue a sandbox paused by a full snapshot (`msb snapshot create --full`).
    Resume { name: String },
    /// Fork a new sandbox from a snapshot: a full one continues where it was
    /// captured (no boot), a disk one boots cold. msb fork SNAPSHOT NAME
    Fork {
        /// Snapshot name, digest or artifact path.
        snapshot: String,
        /// Name of the new sandbox.
        name: String,
        #[command(flatten)]
        opts: sandbox_cmd::ForkOpts,
    },
    /// List sandboxes.
    Ls,
    /// Remove a sandbox (stopping it first).
    Rm { name: String },
    /// Check what the runtime needs.
    Doctor,
    /// Pull an image from its registry (`python` means
    /// `docker.io/library/python:latest`).
    Pull { reference: String },
    /// Load and list images.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Inspect and verify snapshot artifacts.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Work with upper-layer files directly.
    #[command(subcommand)]
    Upper(upper_cmd::UpperCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    // One thread: a command is one operation whose heavy work runs on the
    // blocking pool anyway, and worker threads would only add start-up time
    // to quick commands such as `msb snapshot ls`.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[Runtime]: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<u8, MicrosandboxError> = runtime.block_on(async {
        let done = |r: Result<(), MicrosandboxError>| r.map(|()| 0u8);
        let status = |code: i32| u8::try_from(code).unwrap_or(1);
        match cli.command {
            Command::Create { name, opts } => done(sandbox_cmd::create(name, opts, json).await),
            Command::Exec { name, opts, argv } => {
                sandbox_cmd::exec(name, opts, argv, json).await.map(status)
            }
            Command::Run {
                image,
                network,
                argv,
            } => sandbox_cmd::run(image, network, argv, json)
                .await
                .map(status),
            Command::Stop { name } => done(sandbox_cmd::stop(name, json).await),
            Command::Start { name } => done(sandbox_cmd::start(name, json).await),
            Command::Resume { name } => done(sandbox_cmd::resume(name, json).await),
            Command::Fork {
                snapshot,
                name,
                opts,
            } => done(sandbox_cmd::fork(snapshot, name, opts, json).await),
            Command::Ls => done(sandbox_cmd::list(json).await),
            Command::Rm { name } => done(sandbox_cmd::remove(name, json).await),
            Command::Doctor => doctor::run(json).map(|ok| if ok { 0 } else { 1 }),
            Command::Pull { reference } => done(image_cmd::pull(reference, json).await),
            Command::Image(cmd) => done(image_cmd::run(cmd, json).await),
            Command::Snapshot(cmd) => done(snapshot_cmd::run(cmd, json).await),
            Command::Upper(cmd) => done(upper_cmd::run(cmd, json).await),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            report_error(&err, json);
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
