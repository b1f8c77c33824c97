//! The sandbox registry: one row per sandbox in the `sandboxes` table, with
//! its pinned image, boot configuration, last known state and VM pid. The
//! recorded state is reconciled with process liveness on every read: a
//! sandbox recorded as running whose VM is gone is `crashed`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::runtime;

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Its VM is up.
    Running,
    /// Its VM is up but paused by a full snapshot, until `resume`.
    Paused,
    /// Stopped cleanly (or never started since a stop).
    Stopped,
    /// Its VM ended without being asked to.
    Crashed,
}

impl SandboxState {
    /// Stable name, identical in every SDK.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }

    /// Running or paused: a VM process exists.
    pub fn has_vm(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopped" => Self::Stopped,
            _ => Self::Crashed,
        }
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sandbox boots; fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// The image reference it was created from.
    pub image_ref: String,
    /// The image's manifest digest, pinned at creation.
    pub image_manifest_digest: String,
    /// The image's read-only root disk.
    pub lower_path: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Process environment: the image's, overridden by the builder's.
    pub env: BTreeMap<String, String>,
    /// Working directory of commands (the image's).
    pub working_dir: String,
    /// Unique VM name (`msb-<hash>`): how its QEMU process is recognized.
    pub vm_name: String,
    /// Network policy, allow-list and published ports (`docs/network.md`);
    /// none for a sandbox recorded before networking existed.
    #[serde(default = "crate::network::NetworkConfig::none")]
    pub network: crate::network::NetworkConfig,
}

/// One registry row.
#[derive(Debug, Clone)]
pub(crate) struct SandboxRecord {
    pub name: String,
    pub config: SandboxConfig,
    pub state: SandboxState,
    pub pid: Option<u32>,
    pub created_at: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn insert(home: &MsbHome, rec: &SandboxRecord) -> MicrosandboxResult<()> {
    let conn = db::open(home)?;
    let config = serde_json::to_string(&rec.config)
        .map_err(|e| MicrosandboxError::Runtime(e.to_string()))?;
    let inserted = conn
        .execute(
            "INSERT OR IGNORE INTO sandboxes (name, image_ref, manifest_digest, config_json, state, pid, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![rec.name, rec.config.image_ref, rec.config.image_manifest_digest, config, rec.state.as_str(), rec.pid, rec.created_at],
        )
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    if inserted == 0 {
        return Err(MicrosandboxError::SandboxAlreadyExists {
            name: rec.name.clone(),
        });
    }
    Ok(())
}

pub(crate) fn set_state(
    home: &MsbHome,
    name: &str,
    state: SandboxState,
    pid: Option<u32>,
) -> MicrosandboxResult<()> {
    let conn = db::open(home)?;
    conn.execute(
        "UPDATE sandboxes SET state = ?2, pid = ?3, updated_at = ?4 WHERE name = ?1",
        params![name, state.as_str(), pid, now()],
    )
    .map_err(|e| db::db_error(&db::db_path(home), e))?;
    Ok(())
}

pub(crate) fn delete(home: &MsbHome, name: &str) -> MicrosandboxResult<()> {
    let conn = db::open(home)?;
    conn.execute("DELETE FROM sandboxes WHERE name = ?1", params![name])
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    Ok(())
}

/// The row for `name`, reconciled with the VM's liveness.
pub(crate) fn get(home: &MsbHome, name: &str) -> MicrosandboxResult<SandboxRecord> {
    let conn = db::open(home)?;
    let row = conn
        .query_row(
            "SELECT name, config_json, state, pid, created_at FROM sandboxes WHERE name = ?1",
            params![name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<u32>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(|e| db::db_error(&db::db_path(home), e))?
        .ok_or_else(|| MicrosandboxError::SandboxNotFound {
            name: name.to_string(),
        })?;
    let (name, config, state, pid, created_at) = row;
    let config: SandboxConfig = serde_json::from_str(&config).map_err(|e| {
        MicrosandboxError::Runtime(format!("corrupt registry row for sandbox {name}: {e}"))
    })?;
    let mut record = SandboxRecord {
        name,
        config,
        state: SandboxState::parse(&state),
        pid,
        created_at,
    };
    if record.state.has_vm()
        && !record
            .pid
            .is_some_and(|pid| runtime::is_running(pid, &record.config.vm_name))
    {
        record.state = SandboxState::Crashed;
        record.pid = None;
        set_state(home, &record.name, SandboxState::Crashed, None)?;
        // What the VM left outside the sandbox directory (its RAM file).
        runtime::clean_after(
            &super::sandbox_dir(home, &record.name),
            &record.config.vm_name,
        );
    }
    Ok(record)
}

/// Every sandbox name with the state its row records (not reconciled with
/// the VM's liveness, unlike [`get`]), sorted by name.
pub(crate) fn recorded_states(home: &MsbHome) -> MicrosandboxResult<Vec<(String, SandboxState)>> {
    let conn = db::open(home)?;
    let mut stmt = conn
        .prepare("SELECT name, state FROM sandboxes ORDER BY name")
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    stmt.query_map([], |r| {
        Ok((r.get(0)?, SandboxState::parse(&r.get::<_, String>(1)?)))
    })
    .and_then(|rows| rows.collect())
    .map_err(|e| db::db_error(&db::db_path(home), e))
}

/// Every sandbox name, sorted.
pub(crate) fn names(home: &MsbHome) -> MicrosandboxResult<Vec<String>> {
    let conn = db::open(home)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sandboxes ORDER BY name")
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    stmt.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| db::db_error(&db::db_path(home), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, image_ref: &str) -> SandboxRecord {
        SandboxRecord {
            name: name.to_string(),
            config: SandboxConfig {
                image_ref: image_ref.to_string(),
                image_manifest_digest: format!("sha256:{}", "ab".repeat(32)),
                lower_path: PathBuf::from("/lower"),
                memory_mib: 256,
                cpus: 1,
                env: BTreeMap::new(),
                working_dir: "/".into(),
                vm_name: format!("msb-{name}"),
                network: Default::default(),
            },
            state: SandboxState::Stopped,
            pid: None,
            created_at: now(),
        }
    }

    #[test]
    fn two_homes_used_from_many_threads_never_see_each_others_sandboxes() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let homes = dirs.each_ref().map(|d| MsbHome::at(d.path()));
        std::thread::scope(|scope| {
            for t in 0..6 {
                let (home, image) = (&homes[t % 2], format!("image-of-home-{}", t % 2));
                scope.spawn(move || {
                    for i in 0..20 {
                        // The same names in both homes.
                        let name = format!("sb-{}-{i}", t / 2);
                        insert(home, &record(&name, &image)).unwrap();
                        assert_eq!(get(home, &name).unwrap().config.image_ref, image);
                        set_state(home, &name, SandboxState::Crashed, None).unwrap();
                    }
                });
            }
        });
        for (h, home) in homes.iter().enumerate() {
            let names = names(home).unwrap();
            assert_eq!(names.len(), 60);
            for name in names {
                let rec = get(home, &name).unwrap();
                assert_eq!(rec.config.image_ref, format!("image-of-home-{h}"));
                assert_eq!(rec.state, SandboxState::Crashed);
            }
        }
    }
}
