//! `msb upper …`: integrity digests of raw upper files, for scripts and for
//! debugging a verify mismatch.

use std::path::PathBuf;

use clap::Subcommand;
use microsandbox::snapshot::integrity::upper_digest;
use microsandbox::{IntegrityAlgorithm, MicrosandboxResult};

use serde::Serialize;

use crate::render::{print_json, with_progress};

#[derive(Subcommand)]
pub enum UpperCommand {
    /// Print the integrity digest of an upper file.
    Digest {
        /// The upper file (any file; holes read as zeros).
        file: PathBuf,
        /// Algorithm name: msb-merkle-sha256-v1 (default) or msb-sparse-sha256-v1.
        #[arg(long, default_value = IntegrityAlgorithm::DEFAULT.name())]
        algorithm: String,
    },
}

pub async fn run(cmd: UpperCommand, json: bool) -> MicrosandboxResult<()> {
    match cmd {
        UpperCommand::Digest { file, algorithm } => {
            let algo: IntegrityAlgorithm = algorithm.parse()?;
            let digest = with_progress("hashing", json, |progress| {
                upper_digest(file.clone(), algo, progress)
            })
            .await?;
            if json {
                print_json(&UpperDigest {
                    file: &file.to_string_lossy(),
                    algorithm: algo.name(),
                    digest: &digest,
                });
            } else {
                println!("{digest}  {algo}  {}", file.display());
            }
            Ok(())
        }
    }
}

/// `msb upper digest --json`.
#[derive(Serialize)]
struct UpperDigest<'a> {
    file: &'a str,
    algorithm: &'a str,
    digest: &'a str,
}
