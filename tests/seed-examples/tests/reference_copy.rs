//! The in-repo copy of the reference page is the one the harness compiles;
//! it must stay equal to the team's seed (`../shared/seeds/` next to the
//! repository) whenever that exists.

use std::path::{Path, PathBuf};

const PAGE: &str = "snapshots-rust.mdx";

fn copy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE)
}

/// `<repo>/../shared/seeds/snapshots-rust.mdx`.
fn seed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/seeds")
        .join(PAGE)
}

#[test]
fn the_copy_equals_the_seed() {
    let (copy, seed) = (copy(), seed());
    let ours = std::fs::read(&copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
    match std::fs::read(&seed) {
        Ok(theirs) => assert!(
            ours == theirs,
            "{} differs from the seed {}: if the seed is newer, copy it over \
             (cp {} {}); if the copy was edited on purpose, update the seed too",
            copy.display(),
            seed.display(),
            seed.display(),
            copy.display(),
        ),
        Err(_) => eprintln!(
            "no seed at {}: {} is the reference (update it directly)",
            seed.display(),
            copy.display()
        ),
    }
}
