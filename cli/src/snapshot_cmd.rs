//! `msb snapshot …`: capture, list, inspect, verify, remove, reindex,
//! export and import snapshot artifacts.

use std::time::Instant;

use clap::Subcommand;
use std::path::PathBuf;

use microsandbox::{
    CallOpts, ExportOpts, IntegrityAlgorithm, MicrosandboxError, MicrosandboxResult, Snapshot,
    UpperVerifyStatus,
};

use serde::Serialize;

use crate::render::{JsonList, Removed, human_bytes, print_json, print_json_list, with_progress};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Capture a stopped sandbox's disk: msb snapshot create SANDBOX --name N | --path P
    Create {
        /// The sandbox to capture: stopped or crashed (disk snapshot), or
        /// running with --full.
        sandbox: String,
        /// Capture the running VM whole (memory, CPU and device state, disk);
        /// the sandbox stays paused until `msb resume`. Without --name the
        /// snapshot lives in the sandbox's directory until the sandbox is removed.
        #[arg(long, conflicts_with_all = ["path", "labels", "force", "integrity", "algorithm"])]
        full: bool,
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
    /// Bundle a snapshot into an archive (.tar.zst, or .tar with --plain-tar).
    Export {
        /// Snapshot name, digest or artifact path.
        snapshot: String,
        /// Archive to write (replaced only once complete).
        out: PathBuf,
        /// Also bundle every ancestor.
        #[arg(long)]
        with_parents: bool,
        /// Also bundle the pinned image, so the archive boots anywhere.
        #[arg(long)]
        with_image: bool,
        /// Write an uncompressed tar.
        #[arg(long)]
        plain_tar: bool,
    },
    /// Unpack a snapshot archive (.tar.zst or .tar) and index what it holds.
    Import {
        /// The archive.
        archive: PathBuf,
        /// Destination directory (default $MSB_HOME/snapshots).
        #[arg(long)]
        dest: Option<PathBuf>,
    },
    /// Push a snapshot to a registry as an OCI artifact, its parents as
    /// their own artifacts and its image by digest (docs/registry.md).
    Push {
        /// The snapshot: name, digest or path.
        snapshot: String,
        /// Where: `host[:port]/repo:tag`.
        reference: String,
    },
    /// Pull a snapshot artifact (with the parents and image this home
    /// lacks) from a registry and import it.
    Pull {
        /// The artifact's reference.
        reference: String,
        /// Destination directory (default $MSB_HOME/snapshots).
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

pub async fn run(cmd: SnapshotCommand, json: bool) -> MicrosandboxResult<()> {
    match cmd {
        SnapshotCommand::Create {
            sandbox,
            full: true,
            name,
            ..
        } => {
            let sb = microsandbox::Sandbox::get(&sandbox).await?;
            let snap = sb.snapshot_full().await?;
            let snap = match name {
                Some(name) => {
                    snap.save_named(&name).await?;
                    Snapshot::open(&name).await?
                }
                None => snap,
            };
            if json {
                print_json(&snap);
            } else {
                println!(
                    "{}  {}  (full; {sandbox} is paused: msb resume {sandbox})",
                    snap.digest(),
                    snap.path().display()
                );
            }
            Ok(())
        }
        SnapshotCommand::Create {
            sandbox,
            full: false,
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
                let algo: IntegrityAlgorithm = name.parse()?;
                b = b.integrity_algorithm(algo);
            }
            let snap = b.create().await?;
            if json {
                print_json(&snap);
            } else {
                println!("{}  {}", snap.digest(), snap.path().display());
            }
            Ok(())
        }
        SnapshotCommand::Ls { dir } => list(dir, json).await,
        SnapshotCommand::Rm { snapshot, force } => {
            Snapshot::remove(snapshot.clone(), force).await?;
            if json {
                print_json(&Removed { removed: &snapshot });
            } else {
                println!("removed {snapshot}");
            }
            Ok(())
        }
        SnapshotCommand::Reindex { dir } => {
            let count = match dir {
                Some(dir) => Snapshot::reindex(dir).await?,
                None => Snapshot::reindex_default().await?,
            };
            if json {
                print_json(&Reindexed { indexed: count });
            } else {
                println!("indexed {count} snapshots");
            }
            Ok(())
        }
        SnapshotCommand::Inspect { snapshot } => inspect(&snapshot, json).await,
        SnapshotCommand::Verify { snapshot } => verify(&snapshot, json).await,
        SnapshotCommand::Export {
            snapshot,
            out,
            with_parents,
            with_image,
            plain_tar,
        } => {
            let started = Instant::now();
            let opts = ExportOpts {
                with_parents,
                with_image,
                plain_tar,
            };
            with_progress("exporting", json, |progress| {
                let call = CallOpts {
                    progress,
                    ..CallOpts::default()
                };
                Snapshot::export_with(snapshot, &out, opts, call)
            })
            .await?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            if json {
                print_json(&Exported {
                    archive: &out.to_string_lossy(),
                    bytes: size,
                });
            } else {
                println!(
                    "exported   {} ({}) in {:.2?}",
                    out.display(),
                    human_bytes(size),
                    started.elapsed()
                );
            }
            Ok(())
        }
        SnapshotCommand::Push {
            snapshot,
            reference,
        } => {
            let started = Instant::now();
            let digest = with_progress("pushing", json, |progress| {
                let call = CallOpts {
                    progress,
                    ..CallOpts::default()
                };
                Snapshot::push_with(snapshot, reference.clone(), call)
            })
            .await?;
            if json {
                print_json(&serde_json::json!({ "reference": reference, "digest": digest }));
            } else {
                println!(
                    "pushed     {reference}@{digest} in {:.2?}",
                    started.elapsed()
                );
            }
            Ok(())
        }
        SnapshotCommand::Pull { reference, dest } => {
            let started = Instant::now();
            let handle = with_progress("pulling", json, |progress| {
                let call = CallOpts {
                    progress,
                    ..CallOpts::default()
                };
                Snapshot::pull_with(reference, dest.as_deref(), call)
            })
            .await?;
            if json {
                print_json(&handle);
            } else {
                println!(
                    "pulled     {}  {} in {:.2?}",
                    handle.digest(),
                    handle.path().display(),
                    started.elapsed()
                );
            }
            Ok(())
        }
        SnapshotCommand::Import { archive, dest } => {
            let started = Instant::now();
            let handle = with_progress("importing", json, |progress| {
                let call = CallOpts {
                    progress,
                    ..CallOpts::default()
                };
                Snapshot::import_with(archive, dest.as_deref(), call)
            })
            .await?;
            if json {
                print_json(&handle);
            } else {
                println!(
                    "imported   {}  {} in {:.2?}",
                    handle.digest(),
                    handle.path().display(),
                    started.elapsed()
                );
            }
            Ok(())
        }
    }
}

async fn inspect(target: &str, json: bool) -> MicrosandboxResult<()> {
    let snap = Snapshot::open(target).await?;
    let allocated = snap.upper_allocated_bytes().await?;
    if json {
        print_json(&Inspected {
            snapshot: &snap,
            upper_allocated_bytes: allocated,
        });
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
    let report = with_progress("verifying", json, |progress| {
        snap.verify_with(CallOpts {
            progress,
            ..CallOpts::default()
        })
    })
    .await?;
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
    use std::io::Write;
    if let Some(dir) = dir {
        let snaps = Snapshot::list_dir(dir).await?;
        if json {
            print_json_list(&snaps);
        } else {
            // Buffered: stdout alone would flush every line.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for s in snaps {
                if writeln!(
                    out,
                    "{}  {}  {}",
                    s.digest(),
                    s.created_at(),
                    s.path().display()
                )
                .is_err()
                {
                    break;
                }
            }
            let _ = out.flush();
        }
        return Ok(());
    }
    if json {
        write_json().await
    } else {
        write_table().await
    }
}

/// `msb snapshot ls --json`: the handles streamed from the index as a JSON
/// array (one per line), never held all at once.
async fn write_json() -> MicrosandboxResult<()> {
    let list = std::sync::Arc::new(std::sync::Mutex::new(Some(JsonList::new())));
    let writer = list.clone();
    let listed = Snapshot::list_each(move |h| {
        let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.as_mut().is_some_and(|list| list.push(&h))
    })
    .await;
    let list = list.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(list) = list {
        match listed {
            Ok(()) => list.finish(),
            Err(_) => list.discard(),
        }
    }
    listed
}

/// The `msb snapshot ls` table, streamed from the index: rows are
/// assembled by hand and written in blocks of whole lines as they arrive
/// (with thousands of rows, format machinery, a write per line, or holding
/// every row would cost more than the index query itself). A closed pipe
/// (`msb snapshot ls | head`) just ends the table.
async fn write_table() -> MicrosandboxResult<()> {
    use std::io::Write;
    // Flushed when the visitor is dropped, after the last row.
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout());
    let mut open = out
        .write_all(
            b"NAME                     KIND DIGEST               CREATED             IMAGE\n",
        )
        .is_ok();
    let mut row = Vec::with_capacity(256);
    Snapshot::list_each(move |h| {
        row.clear();
        push_padded(&mut row, h.name().unwrap_or("-"), 24);
        push_padded(&mut row, h.kind().as_str(), 4);
        push_padded(&mut row, &h.digest()[..h.digest().len().min(19)], 20);
        push_time(&mut row, h.created_at());
        row.push(b' ');
        row.extend_from_slice(h.image_ref().as_bytes());
        row.push(b'\n');
        open = open && out.write_all(&row).is_ok();
        open
    })
    .await
}

/// `field`, then spaces up to `width` characters, then one more.
fn push_padded(out: &mut Vec<u8>, field: &str, width: usize) {
    out.extend_from_slice(field.as_bytes());
    let pad = width.saturating_sub(field.chars().count()) + 1;
    out.resize(out.len() + pad, b' ');
}

/// `YYYY-MM-DD HH:MM:SS`, with the digits written directly.
fn push_time(out: &mut Vec<u8>, t: chrono::NaiveDateTime) {
    use chrono::{Datelike, Timelike};
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        // Not four digits: the general formatting gives the same text.
        use std::io::Write;
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
        return;
    };
    push_digits(out, year, 4);
    for (separator, n) in [
        (b'-', t.month()),
        (b'-', t.day()),
        (b' ', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        out.push(separator);
        push_digits(out, n, 2);
    }
}

/// `n` as exactly `width` (at most 4) decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let mut digits = [b'0'; 4];
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// `msb snapshot inspect --json`: the artifact's view plus what the upper
/// occupies on disk.
#[derive(Serialize)]
struct Inspected<'a> {
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    upper_allocated_bytes: u64,
}

/// `msb snapshot reindex --json`.
#[derive(Serialize)]
struct Reindexed {
    indexed: usize,
}

/// `msb snapshot export --json`.
#[derive(Serialize)]
struct Exported<'a> {
    archive: &'a str,
    bytes: u64,
}
