//! Facts about the host the runtime needs: the TSC frequency handed to the
//! guest kernel (`tsc_early_khz`, which stops the TCG boot hangs), how
//! contended its CPUs are (which stretches the guest agent's wait), and which
//! accelerator to use (`MSB_ACCEL=auto|kvm|tcg`; `auto` picks KVM only after a
//! probe boot succeeded, cached per host kernel).

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::MicrosandboxResult;

pub use crate::home::{AccelMode, MSB_ACCEL_ENV};

/// Hardware acceleration for the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The most a wait on the guest is stretched for a busy host (8 × the 30 s
/// boot timeout is 4 minutes).
const MAX_CPU_CONTENTION: f64 = 8.0;

/// How many times slower CPU-bound work runs here now than on an idle
/// host: runnable tasks per online CPU, the larger of the instantaneous
/// count (which sees a burst of boots at once) and the 1-minute load
/// average (which sees a steady load between samples); between 1 and
/// [`MAX_CPU_CONTENTION`]. Eight TCG guests booting on 2 CPUs each take
/// about 4 times their idle wall time, and their timeout must stretch as
/// much, while a hung guest on an idle host is still caught in time.
pub(crate) fn cpu_contention() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let runnable = fs::read_to_string("/proc/loadavg")
        .ok()
        .map_or(0.0, |text| runnable_tasks(&text));
    (runnable / cpus).clamp(1.0, MAX_CPU_CONTENTION)
}

/// The runnable tasks `/proc/loadavg` reports ("0.52 0.58 0.59 3/467
/// 12345"): the larger of the 1-minute average and the tasks running now,
/// not counting the reader itself.
fn runnable_tasks(loadavg: &str) -> f64 {
    let mut fields = loadavg.split_whitespace();
    let average: f64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let now: f64 = fields
        .nth(2)
        .and_then(|f| f.split('/').next())
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.0);
    average.max(now - 1.0)
}

/// The host TSC frequency in kHz: from sysfs where the kernel exports it,
/// otherwise measured against the monotonic clock (exact enough with an
/// invariant TSC; a wrong value only makes the guest clock drift).
pub fn tsc_khz() -> u64 {
    static KHZ: OnceLock<u64> = OnceLock::new();
    *KHZ.get_or_init(|| {
        fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&k: &u64| k > 0)
            .unwrap_or_else(measure_tsc_khz)
    })
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> u64 {
    let window = Duration::from_millis(50);
    let start = Instant::now();
    // SAFETY: rdtsc only reads the time-stamp counter; it has no memory effects.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    while start.elapsed() < window {
        std::hint::spin_loop();
    }
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    let elapsed = start.elapsed().as_secs_f64();
    ((t1 - t0) as f64 / elapsed / 1000.0).round() as u64
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> u64 {
    0
}

/// Why `auto` would not use KVM, or `None` if KVM is worth probing.
pub fn kvm_unusable_reason() -> Option<String> {
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return Some("/dev/kvm does not exist".into());
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm)
        .is_err()
    {
        return Some("/dev/kvm is not accessible to this user".into());
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    if !flags.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        // kvm_pvm and friends: guests crawl and die there, and a probe would
        // cost tens of seconds, so do not even try.
        return Some(
            "the CPU exposes no vmx/svm (paravirtual KVM); guests cannot run under it".into(),
        );
    }
    None
}

/// The accelerator for `mode`: `probe` boots a guest under KVM and says
/// whether it reached init; its answer is cached per host kernel.
pub fn choose_accel(
    mode: AccelMode,
    cache_dir: &Path,
    probe: impl FnOnce() -> bool,
) -> MicrosandboxResult<Accel> {
    match mode {
        AccelMode::Tcg => Ok(Accel::Tcg),
        AccelMode::Kvm => Ok(Accel::Kvm),
        AccelMode::Auto => {
            if kvm_unusable_reason().is_some() {
                return Ok(Accel::Tcg);
            }
            let key = format!(
                "kvm-probe-{}",
                fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
            );
            let cached = cache_dir.join(key);
            if let Ok(answer) = fs::read_to_string(&cached) {
                return Ok(if answer.trim() == "kvm" {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                });
            }
            let accel = if probe() { Accel::Kvm } else { Accel::Tcg };
            let _ = fs::create_dir_all(cache_dir);
            let _ = fs::write(&cached, accel.as_str());
            Ok(accel)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runnable_tasks_come_from_the_average_or_the_running_count() {
        assert_eq!(runnable_tasks("0.52 0.58 0.59 3/467 12345"), 2.0);
        assert_eq!(runnable_tasks("7.50 3.00 1.00 1/467 12345"), 7.5);
        assert_eq!(runnable_tasks("garbage"), 0.0);
        assert!((1.0..=MAX_CPU_CONTENTION).contains(&cpu_contention()));
    }

    #[test]
    fn tsc_frequency_is_plausible() {
        let khz = tsc_khz();
        assert!((500_000..10_000_000).contains(&khz), "{khz}");
    }
}
