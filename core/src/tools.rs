//! Running the host tools the SDK builds disks with (`mkfs.ext4`,
//! `mkfs.erofs`, …): a missing tool is an error naming the Debian package that
//! provides it, a failing one an error carrying its stderr.

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
    let output = Command::new(tool)
        .env("PATH", TOOL_PATH)
        .args(args)
        .output()
        .map_err(|e| {
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
