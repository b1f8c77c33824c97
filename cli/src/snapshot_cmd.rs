//! `msb snapshot …`: capture, list, inspect, verify, remove and reindex
//! snapshot artifacts.

use std::time::Instant;

use clap::Subcommand;
use std::path::PathBuf;

use microsandbox::{
    IntegrityAlgorithm, MicrosandboxError, MicrosandboxResult, Snapshot, UpperVerifyStatus,
};

use crate::render::{human_bytes, print_json, progress_bar};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Capture a stopped sandbox's disk: msb snapshot create SANDBOX --name N | --path P
    Create {
        /// The stopped (or crashed) sandbox to capture.
        sandbox: String,
        /// Bare name under $MSB_HOME/snapshots.
        #[arg(long, conflicts_with = "path")]
        name: Option<String>,
        /// Explicit artifact directory.
        #[arg(long)]
        path: Option<PathBuf>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Overwrite an existing artifact.
        #[arg(long)]
        force: bool,
        /// Record upper integrity (default algorithm unless --algorithm).
        #[arg(long)]
        integrity: bool,
        /// Integrity algorithm (implies --integrity).
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// List indexed snapshots, newest first.
    Ls {
        /// List the artifacts in this directory instead (no index).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove a snapshot (name, digest or path) and its index row.
    Rm {
        snapshot: String,
        /// Remove even if indexed children exist.
        #[arg(long)]
        force: bool,
    },
    /// Rebuild the index from the artifacts in DIR (default $MSB_HOME/snapshots).
    Reindex { dir: Option<PathBuf> },
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
        SnapshotCommand::Create {
            sandbox,
            name,
            path,
            labels,
            force,
            integrity,
            algorithm,
        } => {
            let mut b = Snapshot::builder(sandbox);
            if let Some(name) = name {
                b = b.name(name);
            }
            if let Some(path) = path {
                b = b.path(path);
            }
            for kv in labels {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    MicrosandboxError::InvalidConfig(format!("--label {kv:?} is not KEY=VALUE"))
                })?;
                b = b.label(k, v);
            }
            if force {
                b = b.force();
            }
            if integrity {
                b = b.record_integrity();
            }
            if let Some(name) = algorithm {
                let algo = IntegrityAlgorithm::from_name(&name).ok_or_else(|| {
                    MicrosandboxError::InvalidConfig(format!(
                        "unknown integrity algorithm '{name}' (supported: {})",
                        IntegrityAlgorithm::supported_names()
                    ))
                })?;
                b = b.integrity_algorithm(algo);
            }
            let snap = b.create().await?;
            if json {
                print_json(
                    &serde_json::json!({"path": snap.path(), "digest": snap.digest(), "manifest": snap.manifest()}),
                );
            } else {
                println!("{}  {}", snap.digest(), snap.path().display());
            }
            Ok(())
        }
        SnapshotCommand::Ls { dir } => list(dir, json).await,
        SnapshotCommand::Rm { snapshot, force } => {
            Snapshot::remove(snapshot.clone(), force).await?;
            if !json {
                println!("removed {snapshot}");
            }
            Ok(())
        }
        SnapshotCommand::Reindex { dir } => {
            let count = Snapshot::reindex(dir).await?;
            if json {
                print_json(&serde_json::json!({"indexed": count}));
            } else {
                println!("indexed {count} snapshots");
            }
            Ok(())
        }
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

async fn list(dir: Option<PathBuf>, json: bool) -> MicrosandboxResult<()> {
    if let Some(dir) = dir {
        let snaps = Snapshot::list_dir(dir).await?;
        if json {
            let rows: Vec<_> = snaps
                .iter()
                .map(|s| serde_json::json!({"path": s.path(), "digest": s.digest(), "image": s.image_ref(), "created_at": s.created_at(), "size_bytes": s.size_bytes()}))
                .collect();
            print_json(&rows);
        } else {
            for s in snaps {
                println!("{}  {}  {}", s.digest(), s.created_at(), s.path().display());
            }
        }
        return Ok(());
    }
    let handles = Snapshot::list().await?;
    if json {
        let rows: Vec<_> = handles
            .iter()
            .map(|h| serde_json::json!({
                "name": h.name(), "digest": h.digest(), "path": h.path(), "image": h.image_ref(),
                "parent": h.parent_digest(), "size_bytes": h.size_bytes(),
                "created_at": h.created_at().and_utc().to_rfc3339(), "children": h.child_count(),
            }))
            .collect();
        print_json(&rows);
    } else {
        use std::io::Write;
        // Built by hand into one buffer: with thousands of rows, format
        // machinery would cost more than the index query itself.
        let mut text = String::with_capacity(96 * (handles.len() + 1));
        text.push_str("NAME                     DIGEST               CREATED             IMAGE\n");
        for h in &handles {
            push_padded(&mut text, h.name().unwrap_or("-"), 24);
            push_padded(&mut text, &h.digest()[..h.digest().len().min(19)], 20);
            push_time(&mut text, h.created_at());
            text.push(' ');
            text.push_str(h.image_ref());
            text.push('\n');
        }
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
    Ok(())
}

fn push_padded(out: &mut String, field: &str, width: usize) {
    out.push_str(field);
    for _ in field.chars().count()..width {
        out.push(' ');
    }
    out.push(' ');
}

fn push_time(out: &mut String, t: chrono::NaiveDateTime) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}
