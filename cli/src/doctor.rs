//! `msb doctor`: what the runtime needs, what is present, what is missing
//! (with the command that fixes it), where the guest assets were searched,
//! and which acceleration will be used.

use microsandbox::runtime::{AccelMode, assets, host};
use microsandbox::{MicrosandboxResult, MsbHome};

use serde::Serialize;

use crate::render::print_json;

/// `msb doctor --json`.
#[derive(Serialize)]
struct Report<'a> {
    home: &'a str,
    checks: Vec<Check<'a>>,
    /// Where the guest assets were looked for, in order.
    guest_assets_search: Vec<SearchedPlace<'a>>,
    acceleration: &'a str,
    tsc_khz: u64,
    ok: bool,
}

/// One place the guest assets were looked for.
#[derive(Serialize)]
struct SearchedPlace<'a> {
    dir: &'a std::path::Path,
    /// `config`, `MSB_KERNEL_DIR`, `home` or `shipped`.
    source: &'a str,
    explicit: bool,
    complete: bool,
    used: bool,
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
    // Needed only by sandboxes with a network, shipped beside the assets.
    let netd = kdir.join(microsandbox::runtime::NETD_FILE);
    checks.push((
        format!("network process {}", netd.display()),
        netd.is_file(),
        format!("{} {}", assets::SETUP_COMMAND, kdir.display()),
    ));
    // Where the assets were looked for, in order, and what each place holds.
    let searched: Vec<_> = assets::guest_assets_search(&home)
        .into_iter()
        .map(|c| {
            let missing = assets::missing_assets(&c.dir);
            (c, missing)
        })
        .collect();
    let accel = match home.accel() {
        AccelMode::Kvm => "kvm (forced by the configuration or MSB_ACCEL)".to_string(),
        AccelMode::Tcg => "tcg (forced by the configuration or MSB_ACCEL)".to_string(),
        AccelMode::Auto => match host::kvm_unusable_reason() {
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
            guest_assets_search: searched
                .iter()
                .map(|(c, missing)| SearchedPlace {
                    dir: &c.dir,
                    source: c.source,
                    explicit: c.explicit,
                    complete: missing.is_empty(),
                    used: c.dir == kdir,
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
        println!("guest assets  searched in this order:");
        for (c, missing) in &searched {
            let state = match (c.dir == kdir, missing.is_empty()) {
                (true, _) => "used",
                (false, true) => "complete",
                (false, false) => "incomplete",
            };
            let explicit = if c.explicit { ", explicit" } else { "" };
            println!("  {state:<11} {} ({}{explicit})", c.dir.display(), c.source);
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
