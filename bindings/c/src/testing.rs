//! Test hooks, exported so that the SDKs' tests can drive the error path
//! without a real failure: an error of any kind through the one conversion
//! real errors take, and a panic inside an export.

use std::ffi::c_char;

use microsandbox::MicrosandboxError;

use crate::{MsbResult, arg_str, guard};

/// Test hook: fail with a core error of `kind` (one of the kinds list),
/// converted exactly as real errors are.
#[unsafe(no_mangle)]
pub extern "C" fn msb_test_error_of_kind(kind: *const c_char) -> MsbResult {
    guard(|| Err(error_of_kind(arg_str(kind, "kind")?)))
}

/// Test hook: panic inside an export (it must come out as kind `Runtime`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_test_panic() -> MsbResult {
    guard(|| panic!("deliberate panic from msb_test_panic"))
}

fn error_of_kind(kind: &str) -> MicrosandboxError {
    use MicrosandboxError as E;
    let what = format!("test error of kind {kind}");
    match kind {
        "SnapshotAlreadyExists" => E::SnapshotAlreadyExists { path: what.into() },
        "SnapshotNotFound" => E::SnapshotNotFound { what },
        "SnapshotSandboxRunning" => E::SnapshotSandboxRunning { name: what },
        "SnapshotIntegrity" => E::SnapshotIntegrity {
            path: "/test".into(),
            reason: what,
        },
        "ManifestInvalid" => E::ManifestInvalid {
            path: "/test".into(),
            reason: what,
        },
        "IntegrityAlgorithmUnsupported" => E::IntegrityAlgorithmUnsupported {
            path: "/test".into(),
            algorithm: what,
            supported: String::new(),
        },
        "ArchiveInvalid" => E::ArchiveInvalid {
            path: "/test".into(),
            reason: what,
        },
        "SnapshotHasChildren" => E::SnapshotHasChildren {
            digest: what,
            children: 1,
        },
        "InvalidConfig" => E::InvalidConfig(what),
        "SandboxNotFound" => E::SandboxNotFound { name: what },
        "SandboxAlreadyExists" => E::SandboxAlreadyExists { name: what },
        "SandboxNotRunning" => E::SandboxNotRunning {
            name: what,
            state: "stopped".into(),
        },
        "SandboxNotPaused" => E::SandboxNotPaused {
            name: what,
            state: "running".into(),
        },
        "SnapshotIncompatible" => E::SnapshotIncompatible {
            path: "/test".into(),
            reason: what,
        },
        "ImageNotFound" => E::ImageNotFound { reference: what },
        "ImageInUse" => E::ImageInUse {
            reference: what,
            users: "snapshot test".into(),
        },
        "Registry" => E::Registry {
            reference: "test".into(),
            reason: what,
        },
        "Runtime" => E::Runtime(what),
        "Cancelled" => E::Cancelled,
        "Io" => E::Io {
            path: "/test".into(),
            source: std::io::Error::other(what),
        },
        other => E::InvalidConfig(format!("msb_test_error_of_kind: unknown kind '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{CStr, CString};

    #[test]
    fn every_kind_comes_out_as_itself() {
        for kind in MicrosandboxError::KINDS {
            let c = CString::new(*kind).unwrap();
            let err = msb_test_error_of_kind(c.as_ptr());
            assert!(!err.is_null());
            // SAFETY: a live error; its kind is a static string.
            let got = unsafe { CStr::from_ptr(crate::msb_error_kind(err)) };
            assert_eq!(got.to_str().unwrap(), *kind);
            crate::msb_error_free(err);
        }
    }

    #[test]
    fn a_panic_becomes_a_runtime_error() {
        let err = msb_test_panic();
        // SAFETY: a live error.
        let kind = unsafe { CStr::from_ptr(crate::msb_error_kind(err)) };
        assert_eq!(kind.to_str().unwrap(), "Runtime");
        crate::msb_error_free(err);
    }
}
