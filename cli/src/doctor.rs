//! `msb doctor`: what the runtime needs, what is present, what is missing
//! (with the command that fixes it), and which acceleration will be used.

use microsandbox::runtime::{assets, host};
use microsandbox::{MicrosandboxResult, MsbHome};

use serde::Serialize;

use crate::render::print_json;

/// `msb doctor --json`.
#[derive(Serialize)]
struct Report<'a> {
    home: &'a str,
    checks: Vec<Check<'a>>,
    acceleration: &'a str,
    tsc_khz: u64,
    ok: bool,
}

/// One thing the runtime needs, and the command that provides it.
#[derive(Serialize)]
struct Check<'a> {
    check: &'a str,
    ok: bool,
    /// `null` when the check passed.
    fix: Option<&'a str>,
}

pub fn run(json: bool) -> MicrosandboxResult<bool> {
    let home = MsbHome::resolve()?;
    let kdir = assets::kernel_dir(&home);
    let mut checks = Vec::new();
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.ext4", "e2fsprogs"),
        ("mkfs.erofs", "erofs-utils"),
    ] {
        let found = which(tool);
        checks.push((
            tool.to_string(),
            found,
            format!("apt-get install -y {package}"),
        ));
    }
    let missing = assets::missing_assets(&kdir);
    checks.push((
        format!("guest boot assets in {}", kdir.display()),
        missing.is_empty(),
        format!(
            "{} {}   (missing: {})",
            assets::SETUP_COMMAND,
            kdir.display(),
            missing.join(", ")
        ),
    ));
    let accel = match std::env::var(host::MSB_ACCEL_ENV).as_deref() {
        Ok("kvm") => "kvm (forced by MSB_ACCEL)".to_string(),
        Ok("tcg") => "tcg (forced by MSB_ACCEL)".to_string(),
        _ => match host::kvm_unusable_reason() {
            Some(why) => format!("tcg (software): {why}"),
            None => "kvm if a probe boot succeeds, else tcg".to_string(),
        },
    };
    let ok = checks.iter().all(|(_, found, _)| *found);
    if json {
        print_json(&Report {
            home: &home.root().to_string_lossy(),
            checks: checks
                .iter()
                .map(|(what, found, fix)| Check {
                    check: what,
                    ok: *found,
                    fix: (!found).then_some(fix.as_str()),
                })
                .collect(),
            acceleration: &accel,
            tsc_khz: host::tsc_khz(),
            ok,
        });
    } else {
        println!("home          {}", home.root().display());
        for (what, found, fix) in &checks {
            if *found {
                println!("ok            {what}");
            } else {
                println!("MISSING       {what}\n  fix:        {fix}");
            }
        }
        println!("acceleration  {accel}");
        println!(
            "host TSC      {} kHz (passed to the guest as tsc_early_khz)",
            host::tsc_khz()
        );
    }
    Ok(ok)
}

fn which(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}
