//! Running the `msb` binary against one home: commands that must succeed,
//! commands whose error kind matters, and the operation under test as a
//! child whose output goes to a log file (so the harness can tell whether
//! it printed anything before it was killed).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `msb` binary and the home every command uses.
#[derive(Debug, Clone)]
pub struct Msb {
    pub bin: PathBuf,
    pub home: PathBuf,
}

impl Msb {
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env("MSB_HOME", &self.home)
            .env("MSB_IMPLICIT_PULL", "0")
            .stdin(Stdio::null());
        command
    }

    /// Run `args` to the end.
    pub fn output(&self, args: &[&str]) -> Result<Output, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.command(&args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))
    }

    /// Run `args`, which must succeed; returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`msb {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Run `args`; success, or a failure of one of the `allowed` error kinds,
    /// is fine (e.g. `SnapshotNotFound` when removing what may be gone).
    pub fn run_allowing(&self, args: &[&str], allowed: &[&str]) -> Result<(), String> {
        let out = self.output(args)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if error_kind(&stderr).is_some_and(|k| allowed.contains(&k)) {
            return Ok(());
        }
        Err(format!(
            "`msb {}` failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ))
    }

    /// Run `args` with `--json` and parse what it prints.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.run(&all)?;
        serde_json::from_str(&stdout)
            .map_err(|e| format!("`msb {}` printed no JSON ({e}): {stdout}", all.join(" ")))
    }

    /// Start `args` as a child whose stdout and stderr go to `log`.
    pub fn spawn_logged(&self, args: &[String], log: &Path) -> Result<Child, String> {
        let file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        self.command(args)
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))
    }
}

/// The kind of an `error[<Kind>]: …` line msb printed.
pub fn error_kind(stderr: &str) -> Option<&str> {
    let start = stderr.find("error[")? + "error[".len();
    let len = stderr[start..].find(']')?;
    Some(&stderr[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_read_from_stderr() {
        assert_eq!(
            error_kind("error[SnapshotNotFound]: no snapshot x\n"),
            Some("SnapshotNotFound")
        );
        assert_eq!(error_kind("warning: nothing\n"), None);
    }
}
