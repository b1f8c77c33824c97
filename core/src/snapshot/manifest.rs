//! The snapshot manifest (schema 1): strict parsing, validation, canonical
//! serialization and the digest that is a snapshot's identity. The format is
//! byte-compatible with microsandbox 0.6.6; `docs/manifest.md` and the vectors
//! in `tests/conformance/` pin it down. Field order is load-bearing: it is the
//! canonical byte layout.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use crate::digest::{is_content_digest, is_sha256_digest, sha256_digest_string};
use crate::error::{MicrosandboxError, MicrosandboxResult};
pub use crate::runtime::MachineShape;

/// The only manifest schema version this build reads and writes.
pub const MANIFEST_SCHEMA: u32 = 1;

/// File name of the manifest inside an artifact directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Largest manifest accepted; real ones are well under a kilobyte.
pub const MANIFEST_MAX_BYTES: u64 = 1024 * 1024;

/// Largest integer JSON readers in every language represent exactly (2^53 − 1).
pub const MAX_SAFE_SIZE: u64 = (1 << 53) - 1;

/// The snapshot artifact manifest, the source of truth for an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version; readers reject anything but [`MANIFEST_SCHEMA`].
    pub schema: u32,
    /// On-disk format of the upper layer.
    pub format: SnapshotFormat,
    /// Filesystem inside the upper (e.g. `ext4`).
    pub fstype: String,
    /// Image the snapshot was taken from.
    pub image: ImageRef,
    /// Parent snapshot digest, or `None` for a root.
    #[serde(deserialize_with = "required")]
    pub parent: Option<String>,
    /// RFC 3339 creation timestamp, kept verbatim.
    pub created_at: String,
    /// User labels; sorted by key in canonical form.
    #[serde(deserialize_with = "labels_without_duplicates")]
    pub labels: BTreeMap<String, String>,
    /// The captured upper layer.
    pub upper: UpperLayer,
    /// Best-effort name of the source sandbox (informational).
    #[serde(deserialize_with = "required")]
    pub source_sandbox: Option<String>,
}

/// The label that makes a snapshot full: the digest of its [`VM_FILE`].
/// Labels under `msb.` are reserved for the SDK.
pub const VM_LABEL: &str = "msb.vm";

/// File name of a full snapshot's [`VmSection`], canonical JSON.
pub const VM_FILE: &str = "vm.json";

/// Prefix of the labels the SDK reserves for itself.
pub const RESERVED_LABEL_PREFIX: &str = "msb.";

/// What a snapshot holds: the disk only, or the whole VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// The upper disk of a stopped sandbox; restoring it boots cold.
    Disk,
    /// Disk, RAM and device state of a paused sandbox; restoring it forks.
    Full,
}

impl SnapshotKind {
    /// The name used in listings and by every SDK.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Full => "full",
        }
    }
}

impl fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VM half of a full snapshot (`docs/full-snapshots.md`), stored as
/// [`VM_FILE`] beside the manifest, which names its digest in the label
/// [`VM_LABEL`]: the manifest keeps the 0.6.6 schema, and the snapshot's
/// identity still covers the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// The machine the device state loads into.
    pub machine: MachineShape,
    /// QEMU's device state (a migration stream without RAM).
    pub state: VmFile,
    /// Guest RAM, sparse: exactly `machine.memory_mib` MiB apparent.
    pub ram: VmFile,
    /// Environment of commands in the source sandbox.
    pub env: BTreeMap<String, String>,
    /// Working directory of commands in the source sandbox.
    pub working_dir: String,
}

/// One file of a full snapshot's VM half; its digest is always recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    /// File name inside the artifact directory (never a path).
    pub file: String,
    /// Apparent size in bytes.
    pub size_bytes: u64,
    /// Content digest.
    pub integrity: UpperIntegrity,
}

/// On-disk format of the captured upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotFormat {
    /// Raw filesystem image, sparse on disk.
    Raw,
    /// qcow2 with an optional backing chain (reserved; not produced yet).
    Qcow2,
}

/// The OCI image a snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// Human-readable reference (e.g. `docker.io/library/python:3.12`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Digest of the OCI manifest, `sha256:<64 hex>`.
    pub manifest_digest: String,
}

/// Metadata of the captured upper-layer file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpperLayer {
    /// File name inside the artifact directory (never a path).
    pub file: String,
    /// Apparent size in bytes (sparse on disk).
    pub size_bytes: u64,
    /// Content integrity descriptor, if one was recorded.
    #[serde(deserialize_with = "required")]
    pub integrity: Option<UpperIntegrity>,
}

/// Content integrity descriptor of the upper layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpperIntegrity {
    /// Algorithm name (see `docs/integrity.md`); its parameters are fixed by it.
    pub algorithm: String,
    /// Algorithm output, `sha256:<64 hex>` for the algorithms defined so far.
    pub digest: String,
}

impl SnapshotFormat {
    /// The name used in manifests and by every SDK.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for SnapshotFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Manifest {
    /// Parse and validate manifest bytes. `origin` names the file in errors.
    pub fn parse(bytes: &[u8], origin: &Path) -> MicrosandboxResult<Self> {
        let manifest: Manifest = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(err) => {
                // A newer schema may have other fields; name the real cause.
                if let Some(schema) = declared_schema(bytes)
                    && schema != u64::from(MANIFEST_SCHEMA)
                {
                    return Err(unsupported_schema(origin, schema));
                }
                return Err(MicrosandboxError::manifest_invalid(
                    origin,
                    format!("parse failed: {err}"),
                ));
            }
        };
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// Check every rule that the type system does not already enforce.
    pub fn validate(&self, origin: &Path) -> MicrosandboxResult<()> {
        let invalid = |reason: String| Err(MicrosandboxError::manifest_invalid(origin, reason));
        if self.schema != MANIFEST_SCHEMA {
            return Err(unsupported_schema(origin, u64::from(self.schema)));
        }
        if self.fstype.is_empty() {
            return invalid("fstype must not be empty".into());
        }
        if self.image.reference.is_empty() {
            return invalid("image.ref must not be empty".into());
        }
        if !is_sha256_digest(&self.image.manifest_digest) {
            return invalid(format!(
                "image.manifest_digest must be sha256:<64 lowercase hex>, got {:?}",
                self.image.manifest_digest
            ));
        }
        if let Some(parent) = &self.parent {
            check_parent_digest(parent, origin)?;
        }
        if chrono::DateTime::parse_from_rfc3339(&self.created_at).is_err() {
            return invalid(format!(
                "created_at is not an RFC 3339 timestamp: {:?}",
                self.created_at
            ));
        }
        if !is_plain_file_name(&self.upper.file) {
            return invalid(format!(
                "upper.file must be a relative artifact filename: {}",
                self.upper.file
            ));
        }
        if self.upper.size_bytes > MAX_SAFE_SIZE {
            return invalid(format!(
                "upper.size_bytes {} exceeds 2^53-1",
                self.upper.size_bytes
            ));
        }
        if let Some(integrity) = &self.upper.integrity
            && integrity.algorithm.is_empty()
        {
            return invalid("upper.integrity.algorithm must not be empty".into());
        }
        if let Some(digest) = self.labels.get(VM_LABEL)
            && !is_sha256_digest(digest)
        {
            return invalid(format!(
                "label {VM_LABEL} must be the sha256:<64 hex> digest of {VM_FILE}, got {digest:?}"
            ));
        }
        Ok(())
    }

    /// What a snapshot with this manifest holds.
    pub fn kind(&self) -> SnapshotKind {
        if self.labels.contains_key(VM_LABEL) {
            SnapshotKind::Full
        } else {
            SnapshotKind::Disk
        }
    }
}

impl VmSection {
    /// Parse `vm.json` bytes strictly and check them against the manifest.
    pub fn parse(bytes: &[u8], manifest: &Manifest, origin: &Path) -> MicrosandboxResult<Self> {
        let vm: VmSection = serde_json::from_slice(bytes).map_err(|e| {
            MicrosandboxError::manifest_invalid(origin, format!("parse failed: {e}"))
        })?;
        vm.validate(manifest, origin)?;
        Ok(vm)
    }

    /// Canonical bytes: compact JSON, fields in declaration order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("vm section serialization"))
    }

    fn validate(&self, manifest: &Manifest, origin: &Path) -> MicrosandboxResult<()> {
        let vm = self;
        let invalid = |reason: String| Err(MicrosandboxError::manifest_invalid(origin, reason));
        let files = [&manifest.upper.file, &vm.state.file, &vm.ram.file];
        for (label, file) in [("vm.state", &vm.state), ("vm.ram", &vm.ram)] {
            if !is_plain_file_name(&file.file) || file.file == MANIFEST_FILE || file.file == VM_FILE
            {
                return invalid(format!(
                    "{label}.file must be a relative artifact filename: {}",
                    file.file
                ));
            }
            if file.size_bytes > MAX_SAFE_SIZE {
                return invalid(format!("{label}.size_bytes exceeds 2^53-1"));
            }
            if file.integrity.algorithm.is_empty() || !is_sha256_digest(&file.integrity.digest) {
                return invalid(format!(
                    "{label}.integrity needs an algorithm and a sha256:<64 hex> digest"
                ));
            }
        }
        if files[0] == files[1]
            || files[0] == files[2]
            || files[1] == files[2]
            || files[0] == VM_FILE
        {
            return invalid("upper, vm.state and vm.ram must be different files".into());
        }
        let m = &vm.machine;
        if m.memory_mib < 64 || m.cpus == 0 || m.qemu.is_empty() {
            return invalid(
                "vm.machine needs memory_mib >= 64, cpus >= 1 and a QEMU version".into(),
            );
        }
        if vm.ram.size_bytes != u64::from(m.memory_mib) << 20 {
            return invalid(format!(
                "vm.ram.size_bytes {} is not vm.machine.memory_mib ({}) MiB",
                vm.ram.size_bytes, m.memory_mib
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// The canonical bytes: compact JSON, fields in declaration order, labels
    /// sorted, optional fields as `null`, non-ASCII kept as UTF-8.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain strings, integers and maps into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("manifest serialization"))
    }

    /// The snapshot identity: `sha256:` + hex SHA-256 of the canonical bytes.
    pub fn digest(&self) -> String {
        sha256_digest_string(&self.canonical_bytes())
    }
}

/// `parent` is a content digest; `ManifestInvalid` for `origin` otherwise.
fn check_parent_digest(parent: &str, origin: &Path) -> MicrosandboxResult<()> {
    if !parent.contains(':') {
        return Err(MicrosandboxError::manifest_invalid(
            origin,
            format!("parent is not a digest (missing ':'): {parent}"),
        ));
    }
    if !is_content_digest(parent) {
        return Err(MicrosandboxError::manifest_invalid(
            origin,
            format!("parent must be sha256:<64 hex> or sha512:<128 hex>, got {parent:?}"),
        ));
    }
    Ok(())
}

/// A plain file name: no separators, not `.`/`..`, no NUL, not empty.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn unsupported_schema(origin: &Path, schema: u64) -> MicrosandboxError {
    MicrosandboxError::manifest_invalid(
        origin,
        format!("unsupported schema version {schema} (expected {MANIFEST_SCHEMA})"),
    )
}

/// The `schema` member of a manifest that failed strict parsing, if readable.
fn declared_schema(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct SchemaOnly {
        schema: u64,
    }
    serde_json::from_slice::<SchemaOnly>(bytes)
        .ok()
        .map(|s| s.schema)
}

/// Deserialize an `Option` whose key must be present (as a value or `null`).
/// Using `deserialize_with` makes serde report a missing key as an error.
fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// Deserialize the labels map, rejecting duplicate keys (a plain map would
/// silently keep the last one, letting two readers see different labels).
fn labels_without_duplicates<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct LabelsVisitor;

    impl<'de> Visitor<'de> for LabelsVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of string labels")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut labels = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if labels.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate label `{key}`")));
                }
                labels.insert(key, value);
            }
            Ok(labels)
        }
    }

    deserializer.deserialize_map(LabelsVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"schema":1,"format":"raw","fstype":"ext4","image":{"ref":"docker.io/library/python:3.12","manifest_digest":"sha256:abababababababababababababababababababababababababababababababab"},"parent":null,"created_at":"2026-07-15T10:20:30Z","labels":{},"upper":{"file":"upper.ext4","size_bytes":0,"integrity":null},"source_sandbox":"api"}"#;

    fn parse(s: &str) -> MicrosandboxResult<Manifest> {
        Manifest::parse(s.as_bytes(), Path::new("manifest.json"))
    }

    fn parse_err(s: &str) -> String {
        let err = parse(s).unwrap_err();
        assert_eq!(err.kind(), "ManifestInvalid", "{err}");
        err.to_string()
    }

    #[test]
    fn canonical_form_round_trips_byte_for_byte() {
        let m = parse(VALID).unwrap();
        assert_eq!(m.canonical_bytes(), VALID.as_bytes());
        assert_eq!(
            m.digest(),
            "sha256:5df185c2fc8e9b7e27cdb808a1f107ec8506ad6a06d2546dc15011209e333fdd"
        );
    }

    #[test]
    fn duplicate_labels_are_rejected() {
        let s = VALID.replace(r#""labels":{}"#, r#""labels":{"a":"1","a":"2"}"#);
        assert!(parse_err(&s).contains("duplicate label"));
    }

    #[test]
    fn duplicate_nested_fields_are_rejected() {
        let s = VALID.replace(
            r#""file":"upper.ext4""#,
            r#""file":"upper.ext4","file":"x""#,
        );
        assert!(parse_err(&s).contains("duplicate field"));
    }

    #[test]
    fn sizes_beyond_two_to_the_53_are_rejected() {
        let ok = VALID.replace(r#""size_bytes":0"#, r#""size_bytes":9007199254740991"#);
        parse(&ok).unwrap();
        let too_big = VALID.replace(r#""size_bytes":0"#, r#""size_bytes":9007199254740992"#);
        assert!(parse_err(&too_big).contains("2^53"));
        let negative = VALID.replace(r#""size_bytes":0"#, r#""size_bytes":-1"#);
        parse_err(&negative);
        let float = VALID.replace(r#""size_bytes":0"#, r#""size_bytes":1.5"#);
        parse_err(&float);
    }

    #[test]
    fn upper_file_must_be_a_plain_name() {
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a\\\\b", "..\\/x"] {
            let s = VALID.replace(r#""file":"upper.ext4""#, &format!(r#""file":"{bad}""#));
            parse_err(&s);
        }
    }

    #[test]
    fn digests_are_checked() {
        let upper_hex = VALID.replace("sha256:abab", "sha256:ABAB");
        parse_err(&upper_hex);
        let short = VALID.replace(
            "sha256:abababababababababababababababababababababababababababababababab",
            "sha256:ab",
        );
        parse_err(&short);
        let parent = VALID.replace(r#""parent":null"#, r#""parent":"sha256:00""#);
        parse_err(&parent);
        let parent_ok = VALID.replace(
            r#""parent":null"#,
            r#""parent":"sha256:0000000000000000000000000000000000000000000000000000000000000000""#,
        );
        parse(&parent_ok).unwrap();
    }

    #[test]
    fn schema_errors_name_the_version_even_with_new_fields() {
        let s = VALID.replace(r#""schema":1"#, r#""schema":7,"future":true"#);
        assert!(parse_err(&s).contains("unsupported schema version 7"));
    }

    #[test]
    fn timestamps_with_offsets_and_fractions_are_accepted() {
        for ts in [
            "2026-07-15T10:20:30.123456789+02:00",
            "2026-07-15t10:20:30z",
        ] {
            let s = VALID.replace("2026-07-15T10:20:30Z", ts);
            let m = parse(&s).unwrap();
            assert_eq!(m.created_at, ts);
        }
        for bad in ["2026-07-15", "2026-13-15T10:20:30Z", "yesterday", ""] {
            let s = VALID.replace("2026-07-15T10:20:30Z", bad);
            parse_err(&s);
        }
    }

    #[test]
    fn trailing_garbage_and_non_objects_are_rejected() {
        parse_err(&format!("{VALID} x"));
        parse_err("[]");
        parse_err("");
        parse_err("\u{feff}{}");
    }
}
