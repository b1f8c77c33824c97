//! `msb snapshot …`: inspect and verify snapshot artifacts.

use std::time::Instant;

use clap::Subcommand;
use microsandbox::{MicrosandboxResult, Snapshot, UpperVerifyStatus};

use crate::render::{human_bytes, print_json, progress_bar};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Show an artifact's manifest and digest (does not read the upper's content).
    Inspect {
        /// Bare snapshot name (under $MSB_HOME/snapshots) or artifact path.
        snapshot: String,
    },
    /// Recheck an artifact: manifest, digest, and the upper's recorded integrity.
    Verify {
        /// Bare snapshot name (under $MSB_HOME/snapshots) or artifact path.
        snapshot: String,
    },
}

pub async fn run(cmd: SnapshotCommand, json: bool) -> MicrosandboxResult<()> {
    match cmd {
        SnapshotCommand::Inspect { snapshot } => inspect(&snapshot, json).await,
        SnapshotCommand::Verify { snapshot } => verify(&snapshot, json).await,
    }
}

async fn inspect(target: &str, json: bool) -> MicrosandboxResult<()> {
    let snap = Snapshot::open(target).await?;
    let allocated = snap.upper_allocated_bytes().await?;
    if json {
        print_json(&serde_json::json!({
            "path": snap.path(),
            "digest": snap.digest(),
            "upper_path": snap.upper_path(),
            "upper_allocated_bytes": allocated,
            "manifest": snap.manifest(),
        }));
        return Ok(());
    }
    let m = snap.manifest();
    println!("snapshot   {}", snap.path().display());
    println!("digest     {}", snap.digest());
    println!(
        "image      {} @ {}",
        snap.image_ref(),
        snap.image_manifest_digest()
    );
    println!("format     {} ({})", snap.format(), snap.fstype());
    println!(
        "upper      {}: {} apparent, {} allocated",
        m.upper.file,
        human_bytes(snap.size_bytes()),
        human_bytes(allocated)
    );
    match &m.upper.integrity {
        Some(i) => println!(
            "integrity  {} {} (run `msb snapshot verify` to check)",
            i.algorithm, i.digest
        ),
        None => println!("integrity  not recorded"),
    }
    println!("parent     {}", snap.parent().unwrap_or("none (root)"));
    println!("created    {}", snap.created_at());
    println!("source     {}", snap.source_sandbox().unwrap_or("unknown"));
    if snap.labels().is_empty() {
        println!("labels     none");
    }
    for (i, (key, value)) in snap.labels().iter().enumerate() {
        let head = if i == 0 { "labels" } else { "" };
        println!("{head:<10} {key}={value:?}");
    }
    Ok(())
}

async fn verify(target: &str, json: bool) -> MicrosandboxResult<()> {
    let started = Instant::now();
    let snap = Snapshot::open(target).await?;
    let (bar, progress) = progress_bar("verifying", json);
    let report = snap.verify_with_progress(progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if json {
        print_json(&report);
        return Ok(());
    }
    let took = started.elapsed();
    match &report.upper {
        UpperVerifyStatus::Verified { algorithm, digest } => println!(
            "verified   {}\nupper      {digest} ({algorithm}) in {took:.2?}",
            report.digest
        ),
        UpperVerifyStatus::NotRecorded => println!(
            "ok         {}\nupper      no integrity recorded: structure checked, content not",
            report.digest
        ),
    }
    Ok(())
}
