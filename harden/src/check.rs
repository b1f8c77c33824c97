//! The invariants checked after each kill, from the files on disk and the
//! process table as much as from msb's own views: no leaked VM or network
//! process, no stale run directory, no sandbox directory or snapshot row
//! without its counterpart, every visible artifact, archive and image
//! whole. Each check returns the violations it found, as sentences.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::msb::Msb;

/// Live (not zombie) processes whose command line mentions `needle`, with
/// their command lines (arguments joined by spaces).
pub fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !zombie && text.contains(&needle) {
            found.push((pid, text));
        }
    }
    found
}

/// How long a process may take to exit after the call it belonged to was
/// killed (a tool's parent-death signal, a network process seeing its link
/// close) before it counts as left behind.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The violations `judge` finds in the processes mentioning `needle`, read
/// again after [`EXIT_GRACE`] when the first reading has any.
fn settled_processes(
    needle: &Path,
    judge: impl Fn(Vec<(u32, String)>) -> Vec<String>,
) -> Vec<String> {
    let first = judge(processes_mentioning(needle));
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(EXIT_GRACE);
    judge(processes_mentioning(needle))
}

/// SIGKILL every process mentioning `needle` (the harness's own cleanup).
pub fn kill_all_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let found = processes_mentioning(needle);
    for (pid, _) in &found {
        // SAFETY: kill only sends a signal; these pids were just read from
        // /proc and name the harness's own work directory.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    found
}

/// The run directory the runtime keeps for the sandbox directory `dir`
/// (`/tmp/msb-<uid>/msb-<16 hex of sha256(dir)>`, as `runtime::vm_name`
/// names it; a running sandbox's run directory must exist, which keeps
/// this mirror honest).
pub fn run_dir(sandbox_dir: &Path) -> PathBuf {
    let hash = Sha256::digest(sandbox_dir.to_string_lossy().as_bytes());
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/msb-{uid}")).join(format!("msb-{}", &hex::encode(hash)[..16]))
}

/// The sandboxes `msb ls --json` printed: (name, state).
pub fn listed_sandboxes(ls: &serde_json::Value) -> Vec<(String, String)> {
    ls.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sandboxes: every VM or network process of the home belongs to a sandbox
/// `ls` shows running or paused; every sandbox directory has a row and every
/// row its directory; a run directory exists exactly for the sandboxes
/// with a VM; nothing hidden (staging or trash) is left in `sandboxes/`
/// (the `msb ls` that produced `ls` sweeps what dead processes left).
/// `names` are the sandbox names the operation uses.
pub fn sandboxes(msb: &Msb, ls: &serde_json::Value, names: &[&str]) -> Vec<String> {
    let mut violations = Vec::new();
    let listed = listed_sandboxes(ls);
    let with_vm: BTreeSet<&str> = listed
        .iter()
        .filter(|(_, s)| s == "running" || s == "paused")
        .map(|(n, _)| n.as_str())
        .collect();
    let root = msb.home.join("sandboxes");
    violations.extend(settled_processes(&msb.home, |processes| {
        let mut violations = Vec::new();
        for (pid, cmdline) in processes {
            judge_process(&root, &listed, &with_vm, pid, &cmdline, &mut violations);
        }
        violations
    }));
    let on_disk = entries(&root);

    // `msb ls` sweeps what dead processes left here: nothing hidden stays.
    violations.extend(leftovers(&root, true, |e| e.starts_with('.')));
    for entry in &on_disk {
        if entry.starts_with('.') {
            continue;
        } else if !listed.iter().any(|(n, _)| n == entry) {
            violations.push(format!(
                "sandbox directory {entry} has no row in `msb ls` (a wedged name)"
            ));
        }
    }
    for (name, _) in &listed {
        if !on_disk.contains(name) {
            violations.push(format!("sandbox {name} is listed but has no directory"));
        }
    }
    for name in names {
        let run = run_dir(&root.join(name));
        let has_vm = with_vm.contains(name);
        if run.exists() != has_vm {
            violations.push(format!(
                "run directory {} {} while sandbox {name} is {}",
                run.display(),
                if run.exists() { "exists" } else { "is missing" },
                listed
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("absent", |(_, s)| s.as_str())
            ));
        }
    }
    violations
}

/// A process of the home is fine if it belongs to a sandbox `ls` shows
/// with a VM.
fn judge_process(
    root: &Path,
    listed: &[(String, String)],
    with_vm: &BTreeSet<&str>,
    pid: u32,
    cmdline: &str,
    violations: &mut Vec<String>,
) {
    let owner = cmdline
        .split(&format!("{}/", root.display()))
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ', ',']).next());
    match owner {
        Some(name) if with_vm.contains(name) => {}
        Some(name) => violations.push(format!(
            "process {pid} of sandbox {name} runs, but `msb ls` shows it {}: {}",
            listed
                .iter()
                .find(|(n, _)| n == name)
                .map_or("absent", |(_, s)| s.as_str()),
            shorten(cmdline)
        )),
        None => violations.push(format!(
            "process {pid} mentions the home but no sandbox: {}",
            shorten(cmdline)
        )),
    }
}

/// No process at all mentions the home (operations that start no VM).
pub fn no_processes(msb: &Msb) -> Vec<String> {
    settled_processes(&msb.home, |processes| {
        processes
            .into_iter()
            .map(|(pid, cmdline)| format!("process {pid} mentions the home: {}", shorten(&cmdline)))
            .collect()
    })
}

/// Snapshots, read after `msb snapshot ls --json` gave `ls`: every row has
/// its artifact; every visible artifact in the snapshots directory
/// verifies; hidden staging or trash is a dead process's (none after an
/// operation that `finished`: it swept them); after `msb snapshot reindex`
/// the rows are exactly the artifacts on disk, and nothing hidden is left.
pub fn snapshots(msb: &Msb, ls: &serde_json::Value, finished: bool) -> Vec<String> {
    let dir = msb.home.join("snapshots");
    let mut violations = leftovers(&dir, finished, |e| e.starts_with('.'));
    for path in row_paths(ls) {
        if !Path::new(&path).join("manifest.json").is_file() {
            violations.push(format!("index row {path} has no artifact on disk"));
        }
    }
    let visible: Vec<String> = entries(&dir)
        .into_iter()
        .filter(|e| !e.starts_with('.'))
        .collect();
    for name in &visible {
        let path = dir.join(name);
        if let Err(e) = msb.run(&["snapshot", "verify", &path.to_string_lossy()]) {
            violations.push(format!(
                "visible artifact {} does not verify: {e}",
                path.display()
            ));
        }
    }
    if let Err(e) = msb.run(&["snapshot", "reindex"]) {
        violations.push(format!("reindex failed: {e}"));
        return violations;
    }
    match msb.json(&["snapshot", "ls"]) {
        Ok(ls) => {
            let rows: BTreeSet<String> = row_paths(&ls).into_iter().collect();
            let disk: BTreeSet<String> = visible.iter().map(|n| canonical(&dir.join(n))).collect();
            if rows != disk {
                violations.push(format!(
                    "after reindex the index lists {rows:?} but the disk holds {disk:?}"
                ));
            }
        }
        Err(e) => violations.push(e),
    }
    for hidden in entries(&dir).into_iter().filter(|e| e.starts_with('.')) {
        violations.push(format!(
            "hidden leftover in {} after reindex: {hidden}",
            dir.display()
        ));
    }
    violations
}

/// Images: every image `msb image ls --json` printed has its root disk and
/// its manifest, config and layer blobs; nothing is left in the store's
/// staging directory.
pub fn images(msb: &Msb, ls: &serde_json::Value) -> Vec<String> {
    let mut violations = Vec::new();
    let blobs = msb.home.join("images/blobs/sha256");
    let blob = |digest: &str| blobs.join(digest.trim_start_matches("sha256:"));
    for image in ls.as_array().into_iter().flatten() {
        let reference = image["reference"].as_str().unwrap_or("?");
        let lower = image["lower_path"].as_str().unwrap_or_default();
        if !Path::new(lower).is_file() {
            violations.push(format!("image {reference}: root disk {lower} is missing"));
        }
        let manifest_digest = image["manifest_digest"].as_str().unwrap_or_default();
        let manifest = match std::fs::read(blob(manifest_digest)) {
            Ok(bytes) => bytes,
            Err(e) => {
                violations.push(format!(
                    "image {reference}: manifest blob {manifest_digest}: {e}"
                ));
                continue;
            }
        };
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&manifest) else {
            violations.push(format!("image {reference}: manifest blob is not JSON"));
            continue;
        };
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        for digest in std::iter::once(&manifest["config"])
            .chain(layers.iter())
            .filter_map(|d| d["digest"].as_str())
        {
            if !blob(digest).is_file() {
                violations.push(format!("image {reference}: blob {digest} is missing"));
            }
        }
    }
    violations
}

/// The image store's staging directory: after a kill, only what a dead
/// process left; after a finished run, nothing.
pub fn image_staging(msb: &Msb, finished: bool) -> Vec<String> {
    leftovers(&msb.home.join("images/tmp"), finished, |_| true)
}

/// An export destination: absent, or a complete archive (it imports and
/// the imported artifact verifies); beside it, after a kill only the
/// staged file of a dead process, after a finished export nothing.
pub fn archive(msb: &Msb, archive: &Path, scratch: &Path, finished: bool) -> Vec<String> {
    let parent = archive.parent().unwrap_or(Path::new("."));
    let mut violations = leftovers(parent, finished, |e| e.starts_with('.'));
    if !archive.exists() {
        return violations;
    }
    let _ = std::fs::remove_dir_all(scratch);
    let (a, s) = (archive.to_string_lossy(), scratch.to_string_lossy());
    match msb.json(&["snapshot", "import", &a, "--dest", &s]) {
        Ok(imported) => {
            let path = imported["path"].as_str().unwrap_or_default().to_string();
            if let Err(e) = msb.run(&["snapshot", "verify", &path]) {
                violations.push(format!("the imported archive does not verify: {e}"));
            }
            // Through msb, so its index row goes too.
            if let Err(e) = msb.run(&["snapshot", "rm", &path, "--force"]) {
                violations.push(format!("cannot remove the scratch import: {e}"));
            }
        }
        Err(e) => violations.push(format!(
            "an archive is at {} but does not import: {e}",
            archive.display()
        )),
    }
    let _ = std::fs::remove_dir_all(scratch);
    violations
}

fn row_paths(ls: &serde_json::Value) -> Vec<String> {
    ls.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect()
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// A command line cut to a readable length for reports.
pub fn shorten(cmdline: &str) -> String {
    const MAX: usize = 160;
    match cmdline.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &cmdline[..cut]),
        None => cmdline.to_string(),
    }
}

/// Whether a leftover staging or trash name carries the pid of a process
/// that is gone (its first all-digit `-` part): the next operation on the
/// same place deletes it. A leftover without one could never be told
/// apart from work in progress.
pub fn abandoned_by_dead_process(name: &str) -> bool {
    name.split('-')
        .find(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Leftovers in `dir` (those `is_leftover` picks): after a kill only ones a
/// dead process left (swept by the next operation there); after a run that
/// finished, none.
fn leftovers(dir: &Path, finished: bool, is_leftover: impl Fn(&str) -> bool) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|e| is_leftover(e))
        .filter(|e| finished || !abandoned_by_dead_process(e))
        .map(|e| format!("leftover in {}: {e}", dir.display()))
        .collect()
}

/// The names in `dir` (none if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_rows_are_read_by_name_and_state() {
        let ls = serde_json::json!([{"name": "k", "state": "running"}, {"name": "s", "state": "stopped"}]);
        assert_eq!(
            listed_sandboxes(&ls),
            vec![
                ("k".to_string(), "running".to_string()),
                ("s".to_string(), "stopped".to_string())
            ]
        );
    }

    #[test]
    fn our_own_process_is_found_by_its_command_line() {
        let me = std::env::current_exe().unwrap();
        let pids: Vec<u32> = processes_mentioning(&me)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(pids.contains(&std::process::id()), "{pids:?}");
    }
}
