//! Diagnostics on the console: every line goes to PID 1's stderr, which
//! [`crate::init::boot::early_setup`] points at `/dev/console` (the kernel
//! console, i.e. the serial log on the host), prefixed with the time since boot.

use std::io::Write;

use nix::time::{ClockId, clock_gettime};

/// Seconds since boot (`CLOCK_BOOTTIME`; 0 if the clock cannot be read).
pub fn uptime() -> f64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map_or(0.0, |ts| ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9)
}

/// Writes one line; errors (no console yet) are ignored.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let line = format!("[{:9.3}] msb-guest: {args}\n", uptime());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `log!("fmt", args..)`: one diagnostic line on the console.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::init::log::write_line(format_args!($($arg)*))
    };
}
