//! Running the `msb` binary under a given MSB_HOME, for the CLI suites.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Run `msb args…` with `MSB_HOME=home` and no implicit pull.
pub fn msb(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msb"))
        .env("MSB_HOME", home)
        // A missing image is an error here, never a pull from the internet.
        .env("MSB_IMPLICIT_PULL", "0")
        .args(args)
        .output()
        .unwrap()
}

/// Run `msb args…`, require success, return stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = msb(home, args);
    assert!(
        out.status.success(),
        "msb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
