//! The JSON shape of an opened artifact ([`Snapshot`]), documented in
//! `docs/json.md` ("Snapshot"). Built from the public accessors only, so
//! the shape is what every SDK's accessors show: the CLI's `--json` and the
//! C ABI serialize it, and nothing else hand-builds it.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::Snapshot;

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Snapshot", 15)?;
        s.serialize_field("digest", self.digest())?;
        s.serialize_field("path", &self.path().to_string_lossy())?;
        s.serialize_field("image_ref", self.image_ref())?;
        s.serialize_field("image_manifest_digest", self.image_manifest_digest())?;
        s.serialize_field("format", &self.format())?;
        s.serialize_field("fstype", self.fstype())?;
        s.serialize_field("parent", &self.parent())?;
        s.serialize_field("created_at", &utc(self.created_at()))?;
        s.serialize_field("labels", self.labels())?;
        s.serialize_field("source_sandbox", &self.source_sandbox())?;
        s.serialize_field("size_bytes", &self.size_bytes())?;
        s.serialize_field("upper_path", &self.upper_path().to_string_lossy())?;
        s.serialize_field("integrity", &self.manifest().upper.integrity)?;
        s.serialize_field("kind", &self.kind())?;
        s.serialize_field("vm", &self.vm())?;
        s.end()
    }
}

/// A recorded RFC 3339 time in UTC (`Z`): verbatim when it already is,
/// converted otherwise (a manifest may carry any offset). Manifests are
/// validated as RFC 3339 when opened, so the fallback never shows.
fn utc(recorded: &str) -> std::borrow::Cow<'_, str> {
    if recorded.ends_with('Z') {
        return recorded.into();
    }
    match chrono::DateTime::parse_from_rfc3339(recorded) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
        Err(_) => recorded.into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::snapshot::index::testing::artifact;

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("base");
        let snap = artifact(&dir, "2026-07-15T12:20:30+02:00", None);
        let v = serde_json::to_value(&snap).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "digest": snap.digest(),
                "path": dir.to_str().unwrap(),
                "image_ref": "docker.io/library/python:3.12",
                "image_manifest_digest": format!("sha256:{}", "ab".repeat(32)),
                "format": "raw",
                "fstype": "ext4",
                "parent": null,
                "created_at": "2026-07-15T10:20:30Z",
                "labels": {"stage": "one"},
                "source_sandbox": null,
                "size_bytes": 4096,
                "upper_path": dir.join("upper.ext4").to_str().unwrap(),
                "integrity": null,
                "kind": "disk",
                "vm": null,
            })
        );
    }
}
