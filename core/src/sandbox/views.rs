//! The JSON shapes of a sandbox ([`SandboxHandle`]) and of a command's
//! result ([`ExecOutput`]), documented in `docs/json.md`. Built from public
//! accessors only; the runtime's internals (VM name, lower disk) stay out.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{ExecOutput, SandboxHandle};

impl Serialize for SandboxHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let config = self.config();
        let mut s = serializer.serialize_struct("SandboxHandle", 10)?;
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
