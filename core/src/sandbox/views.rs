//! The JSON shapes of a sandbox ([`SandboxHandle`]) and of a command's
//! result ([`ExecOutput`]), documented in `docs/json.md`. Built from public
//! accessors only; the runtime's internals (VM name, lower disk) stay out.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{ExecOutput, SandboxHandle};
use crate::network::{AllowEntry, NetworkConfig, NetworkPolicy, PublishedPort};

/// A sandbox's network in its view: every field present (the recorded
/// configuration leaves empty lists out).
#[derive(serde::Serialize)]
struct NetworkView<'a> {
    policy: NetworkPolicy,
    allow: &'a [AllowEntry],
    ports: &'a [PublishedPort],
}

impl<'a> From<&'a NetworkConfig> for NetworkView<'a> {
    fn from(network: &'a NetworkConfig) -> Self {
        Self {
            policy: network.policy,
            allow: &network.allow,
            ports: &network.ports,
        }
    }
}

impl Serialize for SandboxHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let config = self.config();
        let mut s = serializer.serialize_struct("SandboxHandle", 11)?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("state", &self.state())?;
        s.serialize_field("image_ref", self.image_ref())?;
        s.serialize_field("image_manifest_digest", &config.image_manifest_digest)?;
        s.serialize_field("memory_mib", &config.memory_mib)?;
        s.serialize_field("cpus", &config.cpus)?;
        s.serialize_field("env", &config.env)?;
        s.serialize_field("working_dir", &config.working_dir)?;
        s.serialize_field("created_at", self.created_at())?;
        s.serialize_field("path", &self.path().to_string_lossy())?;
        s.serialize_field("network", &NetworkView::from(&config.network))?;
        s.end()
    }
}

impl Serialize for ExecOutput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ExecOutput", 7)?;
        s.serialize_field("exit_code", &self.exit_code)?;
        s.serialize_field("signal", &self.signal)?;
        s.serialize_field("timed_out", &self.timed_out)?;
        s.serialize_field("stdout", &String::from_utf8_lossy(&self.stdout))?;
        s.serialize_field("stderr", &String::from_utf8_lossy(&self.stderr))?;
        s.serialize_field("stdout_truncated", &self.stdout_truncated)?;
        s.serialize_field("stderr_truncated", &self.stderr_truncated)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::MsbHome;
    use crate::sandbox::{SandboxConfig, SandboxState};

    fn handle_with(network: NetworkConfig) -> SandboxHandle {
        SandboxHandle {
            home: MsbHome::at("/nonexistent-home"),
            name: "web".into(),
            dir: "/nonexistent-home/sandboxes/web".into(),
            config: SandboxConfig {
                image_ref: "local/busybox:1".into(),
                image_manifest_digest: "sha256:ab".into(),
                lower_path: "/lower".into(),
                memory_mib: 256,
                cpus: 1,
                env: Default::default(),
                working_dir: "/".into(),
                vm_name: "msb-x".into(),
                network,
            },
            state: SandboxState::Stopped,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn sandbox_view_shows_the_network_with_every_field() {
        let network = NetworkConfig {
            policy: NetworkPolicy::Public,
            allow: vec!["10.0.0.0/8".parse().unwrap(), "pypi.org".parse().unwrap()],
            ports: vec![PublishedPort {
                host: 8080,
                guest: 80,
            }],
        };
        let view = serde_json::to_value(handle_with(network)).unwrap();
        assert_eq!(
            view["network"],
            serde_json::json!({"policy": "public", "allow": ["10.0.0.0/8", "pypi.org"], "ports": [{"host": 8080, "guest": 80}]})
        );
        let view = serde_json::to_value(handle_with(NetworkConfig::none())).unwrap();
        assert_eq!(
            view["network"],
            serde_json::json!({"policy": "none", "allow": [], "ports": []})
        );
    }

    #[test]
    fn exec_output_is_text_with_invalid_bytes_replaced() {
        let out = ExecOutput {
            exit_code: 3,
            stdout: b"hi\n".to_vec(),
            stderr: vec![0xff],
            ..ExecOutput::default()
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"exit_code": 3, "signal": null, "timed_out": false, "stdout": "hi\n", "stderr": "\u{fffd}", "stdout_truncated": false, "stderr_truncated": false})
        );
    }
}
