//! The operations the harness kills, each group in a home of its own
//! ([`Op::group`]): what the home holds before the first run
//! ([`Op::fixture`]), what each run needs
//! first ([`Op::prepare`], always with the same names, so a name a kill
//! wedged fails there), the command killed ([`Op::argv`]), the one further
//! command run after the kill and the invariants checked then
//! ([`Op::check`]).

use std::path::{Path, PathBuf};

use crate::check;
use crate::msb::Msb;

/// The image every sandbox of the harness boots (the busybox test image).
pub const IMAGE: &str = "local/busybox:kill";
/// The reference the image-load operation loads and removes again.
const LOADED: &str = "local/kill-load:1";
/// The sandbox the sandbox operations create, start, stop and remove.
const SANDBOX: &str = "k";
/// The stopped sandbox the snapshot operations capture.
const SOURCE: &str = "src";
/// The snapshot the snapshot operations create, remove, export and import.
const SNAPSHOT: &str = "snap";
/// The snapshot create the snapshot operations kill (and redo when
/// preparing a run that needs the snapshot).
const CREATE_SNAPSHOT: [&str; 6] = [
    "snapshot",
    "create",
    SOURCE,
    "--name",
    SNAPSHOT,
    "--integrity",
];
/// The disk snapshot sandbox creates boot from (a cold boot, every time).
const DISK_SNAPSHOT: &str = "disk";

/// One operation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    SnapshotCreate,
    SnapshotRemove,
    Reindex,
    Export,
    Import,
    Create,
    Start,
    Stop,
    Rm,
    ImageLoad,
}

/// Where an operation runs: its home, its work directory (archives,
/// scratch) and the busybox image archive.
pub struct OpEnv {
    pub msb: Msb,
    pub work: PathBuf,
    pub busybox_archive: PathBuf,
}

impl OpEnv {
    fn archive(&self) -> PathBuf {
        self.work.join("out/snap.tar.zst")
    }

    fn import_source(&self) -> PathBuf {
        self.work.join("snap-with-image.tar.zst")
    }

    fn path(&self, p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }
}

impl Op {
    /// Every operation, in the order a full run takes them.
    pub const ALL: [Op; 10] = [
        Op::SnapshotCreate,
        Op::SnapshotRemove,
        Op::Reindex,
        Op::Export,
        Op::Import,
        Op::ImageLoad,
        Op::Create,
        Op::Start,
        Op::Stop,
        Op::Rm,
    ];

    /// The name used by `--ops` and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Op::SnapshotCreate => "snapshot-create",
            Op::SnapshotRemove => "snapshot-remove",
            Op::Reindex => "reindex",
            Op::Export => "export",
            Op::Import => "import",
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Rm => "rm",
            Op::ImageLoad => "image-load",
        }
    }

    /// The operation called `name`.
    pub fn parse(name: &str) -> Result<Op, String> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
                format!("unknown operation {name:?}; one of {}", names.join(","))
            })
    }

    /// The operations of a group share a home and its fixture (booting the
    /// fixture's VM once, not once per operation).
    pub fn group(self) -> &'static str {
        match self {
            Op::SnapshotCreate | Op::SnapshotRemove | Op::Reindex | Op::Export => "snapshots",
            Op::Import => "import",
            Op::ImageLoad => "image-load",
            Op::Create | Op::Start | Op::Stop | Op::Rm => "sandboxes",
        }
    }

    fn is_sandbox_op(self) -> bool {
        matches!(self, Op::Create | Op::Start | Op::Stop | Op::Rm)
    }

    /// Fill a fresh home with what every run of this operation's group
    /// starts from.
    pub fn fixture(self, env: &OpEnv) -> Result<(), String> {
        let msb = &env.msb;
        let busybox = env.path(&env.busybox_archive);
        if self == Op::ImageLoad {
            return Ok(());
        }
        msb.run(&["image", "load", &busybox, "--tag", IMAGE])?;
        if self.is_sandbox_op() {
            // A disk snapshot to boot from: `create --from-snapshot` always
            // boots cold (an image create forks the instant-create base).
            msb.run(&["create", SOURCE, "--image", IMAGE, "--network", "none"])?;
            msb.run(&["stop", SOURCE])?;
            msb.run(&["snapshot", "create", SOURCE, "--name", DISK_SNAPSHOT])?;
            msb.run(&["rm", SOURCE])?;
            return Ok(());
        }
        // A stopped sandbox holding 16 MiB of random data to capture.
        msb.run(&["create", SOURCE, "--image", IMAGE, "--network", "none"])?;
        msb.run(&[
            "exec",
            SOURCE,
            "--",
            "sh",
            "-c",
            "dd if=/dev/urandom of=/data bs=1M count=16 2>/dev/null && sync",
        ])?;
        msb.run(&["stop", SOURCE])?;
        if self == Op::Import {
            // An archive carrying the image too; then the home forgets
            // both, so every import lands blobs, root disk and artifact.
            self.ensure_snapshot(msb)?;
            let source = env.path(&env.import_source());
            msb.run(&["snapshot", "export", SNAPSHOT, &source, "--with-image"])?;
            msb.run(&["snapshot", "rm", SNAPSHOT])?;
            msb.run(&["rm", SOURCE])?;
            msb.run(&["image", "rm", IMAGE])?;
        }
        Ok(())
    }

    fn ensure_snapshot(self, msb: &Msb) -> Result<(), String> {
        msb.run_allowing(&CREATE_SNAPSHOT, &["SnapshotAlreadyExists"])
    }

    /// The state of sandbox `name` per `msb ls` (`None`: absent).
    fn sandbox_state(msb: &Msb, name: &str) -> Result<Option<String>, String> {
        let ls = msb.json(&["ls"])?;
        Ok(check::listed_sandboxes(&ls)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s))
    }

    /// Bring the home to where run `run` starts, reusing the same names as
    /// every run before (a failure here is a wedged name).
    pub fn prepare(self, env: &OpEnv, run: usize) -> Result<(), String> {
        let msb = &env.msb;
        match self {
            Op::SnapshotCreate => msb.run_allowing(
                &["snapshot", "rm", SNAPSHOT, "--force"],
                &["SnapshotNotFound"],
            ),
            Op::SnapshotRemove | Op::Reindex | Op::Export => {
                if self == Op::Export {
                    let archive = env.archive();
                    std::fs::create_dir_all(env.work.join("out"))
                        .map_err(|e| format!("{}: {e}", archive.display()))?;
                    match std::fs::remove_file(&archive) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(format!("{}: {e}", archive.display()));
                        }
                        _ => {}
                    }
                }
                self.ensure_snapshot(msb)
            }
            Op::Import => {
                msb.run_allowing(
                    &["snapshot", "rm", SNAPSHOT, "--force"],
                    &["SnapshotNotFound"],
                )?;
                msb.run_allowing(&["image", "rm", IMAGE], &["ImageNotFound"])
            }
            Op::ImageLoad => msb.run_allowing(&["image", "rm", LOADED], &["ImageNotFound"]),
            Op::Create => msb.run_allowing(&["rm", SANDBOX], &["SandboxNotFound"]),
            Op::Start | Op::Stop | Op::Rm => {
                let state = Self::sandbox_state(msb, SANDBOX)?;
                if state.is_none() {
                    msb.run(&["create", SANDBOX, "--image", IMAGE])?;
                }
                let state = state.as_deref().unwrap_or("running");
                match (self, state) {
                    (Op::Start, "running" | "paused") => msb.run(&["stop", SANDBOX]).map(drop),
                    (Op::Stop | Op::Rm, "stopped" | "crashed") => {
                        msb.run(&["start", SANDBOX]).map(drop)
                    }
                    (Op::Stop | Op::Rm, "paused") => msb.run(&["resume", SANDBOX]).map(drop),
                    _ => Ok(()),
                }
            }
        }
        .map_err(|e| format!("preparing run {run}: {e}"))
    }

    /// How many variants [`argv`](Self::argv) takes turns with (run `n`
    /// runs variant `n % variants`).
    pub fn variants(self) -> usize {
        if self == Op::Create { 2 } else { 1 }
    }

    /// The command under test in run `run`.
    pub fn argv(self, env: &OpEnv, run: usize) -> Vec<String> {
        let archive = env.path(&env.archive());
        let args: Vec<&str> = match self {
            Op::SnapshotCreate => CREATE_SNAPSHOT.to_vec(),
            Op::SnapshotRemove => vec!["snapshot", "rm", SNAPSHOT],
            Op::Reindex => vec!["snapshot", "reindex"],
            Op::Export => vec!["snapshot", "export", SNAPSHOT, &archive, "--with-image"],
            Op::Import => {
                return vec![
                    "snapshot".into(),
                    "import".into(),
                    env.path(&env.import_source()),
                ];
            }
            // Every other create boots cold from a disk snapshot; the
            // rest fork the instant-create base (or boot and leave it).
            Op::Create if run % 2 == 1 => {
                vec!["create", SANDBOX, "--from-snapshot", DISK_SNAPSHOT]
            }
            Op::Create => vec!["create", SANDBOX, "--image", IMAGE],
            Op::Start => vec!["start", SANDBOX],
            Op::Stop => vec!["stop", SANDBOX],
            Op::Rm => vec!["rm", SANDBOX],
            Op::ImageLoad => {
                return vec![
                    "image".into(),
                    "load".into(),
                    env.path(&env.busybox_archive),
                    "--tag".into(),
                    LOADED.into(),
                ];
            }
        };
        args.into_iter().map(str::to_string).collect()
    }

    /// Run the one further command this operation allows after a kill,
    /// then check every invariant; the violations found. `finished`: the
    /// operation ran to its end (it was not killed).
    pub fn check(self, env: &OpEnv, finished: bool) -> Result<Vec<String>, String> {
        let msb = &env.msb;
        if self.is_sandbox_op() {
            let ls = msb.json(&["ls"])?;
            return Ok(check::sandboxes(msb, &ls, &[SANDBOX]));
        }
        let mut violations = check::no_processes(msb);
        match self {
            Op::ImageLoad => {
                let ls = msb.json(&["image", "ls"])?;
                violations.extend(check::images(msb, &ls));
                violations.extend(check::image_staging(msb, finished));
            }
            _ => {
                let ls = msb.json(&["snapshot", "ls"])?;
                violations.extend(check::snapshots(msb, &ls, finished));
                if self == Op::Export {
                    violations.extend(check::archive(
                        msb,
                        &env.archive(),
                        &env.work.join("scratch"),
                        finished,
                    ));
                }
                if self == Op::Import {
                    violations.extend(check::images(msb, &msb.json(&["image", "ls"])?));
                    violations.extend(check::image_staging(msb, finished));
                }
            }
        }
        Ok(violations)
    }

    /// After the last run: `msb rm` of the operation's sandbox must remove
    /// it, its VM and network processes and its run directory.
    pub fn finish(self, env: &OpEnv) -> Vec<String> {
        let msb = &env.msb;
        if !self.is_sandbox_op() {
            return Vec::new();
        }
        if let Err(e) = msb.run_allowing(&["rm", SANDBOX], &["SandboxNotFound"]) {
            return vec![e];
        }
        let mut violations = check::no_processes(msb);
        let run = check::run_dir(&msb.home.join("sandboxes").join(SANDBOX));
        if run.exists() {
            violations.push(format!("run directory {} outlived `msb rm`", run.display()));
        }
        violations
    }

    /// What the run leaves for the report when it fails: the home's views
    /// and files.
    pub fn state(self, env: &OpEnv) -> String {
        let msb = &env.msb;
        let view = |args: &[&str]| msb.run(args).unwrap_or_else(|e| e).trim_end().to_string();
        let mut out = String::new();
        for args in [&["ls"][..], &["snapshot", "ls"], &["image", "ls"]] {
            out.push_str(&format!("$ msb {}\n{}\n", args.join(" "), view(args)));
        }
        for dir in ["sandboxes", "snapshots", "images/tmp"] {
            out.push_str(&format!(
                "{dir}/: {:?}\n",
                check::entries(&msb.home.join(dir))
            ));
        }
        for (pid, cmdline) in check::processes_mentioning(&msb.home) {
            out.push_str(&format!("process {pid}: {}\n", check::shorten(&cmdline)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_parses_back_from_its_name() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()).unwrap(), op);
        }
        assert!(Op::parse("nope").is_err());
    }
}
