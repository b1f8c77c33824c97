//! Running the host tools the SDK builds disks with (`mkfs.ext4`,
//! `mkfs.erofs`, …): a missing tool is an error naming the Debian package that
//! provides it, a failing one an error carrying its stderr. A tool dies
//! with the process that runs it: a killed `msb image load` leaves no
//! `mkfs.erofs` writing on (`docs/crash-safety.md`).

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// Where Debian keeps the filesystem tools, which a non-root `PATH` may lack.
const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Run `tool` with `args`; `package` is the Debian package that provides it.
pub(crate) fn run_tool<I, S>(tool: &str, args: I, package: &str) -> MicrosandboxResult<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(tool);
    command.env("PATH", TOOL_PATH).args(args);
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure only calls prctl and
    // getppid, both async-signal-safe. The thread that forks waits for the
    // tool (`output`), so the death signal fires only when the process dies.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the signal was armed.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the calling process is gone"));
            }
            Ok(())
        });
    }
    let output = command.output().map_err(|e| {
        MicrosandboxError::Runtime(format!(
            "cannot run {tool} ({e}); install it with: apt-get install {package}"
        ))
    })?;
    if !output.status.success() {
        return Err(MicrosandboxError::Runtime(format!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
