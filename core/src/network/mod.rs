//! Guest networking: the per-sandbox network configuration (policy,
//! allow-list, published ports), the policy's decision on a destination
//! address, the guest's fixed addressing, and the user-mode network stack
//! that `msb-netd` runs beside QEMU. The configuration recorded with the
//! sandbox is the source of truth; `msb-netd` gets it on its command line
//! and enforces it on the host, at connect time, on resolved addresses
//! (`docs/network.md`).
//!
//! Why a stack of our own on `smoltcp` rather than QEMU's user netdev
//! (slirp): slirp opens host sockets itself and cannot filter destinations,
//! so a guest could always reach the host's loopback through its gateway.
//! `smoltcp` is a well-kept, allocation-light, `unsafe`-free TCP/IP stack
//! that terminates the guest's connections in our process, where every
//! destination passes the policy before a host socket is opened.

mod policy;
pub mod stack;

use serde::{Deserialize, Serialize};

pub use policy::{AllowEntry, Decision, Policy};

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// The guest's addressing, shared with the guest init. TCP/UDP to the
/// [`GATEWAY`] goes to the host's loopback (allowed only under
/// [`NetworkPolicy::All`] or an allow-list entry); UDP to [`DNS_ADDR`]
/// port 53 goes to the host's resolver.
pub use microsandbox_guest::netconf::{DNS_ADDR, GATEWAY, GUEST_ADDR, GUEST_MAC, PREFIX_LEN};
/// The gateway's MAC address (answered by `msb-netd`).
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// Which destinations a sandbox may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// No network interface at all (only `lo`).
    None,
    /// The default. Public addresses only: not the host (its loopback or
    /// its interfaces' addresses), no private, link-local (cloud metadata),
    /// CGNAT, multicast or reserved ranges, except what the allow-list names.
    #[default]
    Public,
    /// Everything the host can reach, its loopback included.
    All,
}

impl NetworkPolicy {
    /// Stable name: `none`, `public` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Public => "public",
            Self::All => "all",
        }
    }
}

impl std::fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetworkPolicy {
    type Err = MicrosandboxError;

    fn from_str(s: &str) -> MicrosandboxResult<Self> {
        match s {
            "none" => Ok(Self::None),
            "public" => Ok(Self::Public),
            "all" => Ok(Self::All),
            other => Err(MicrosandboxError::InvalidConfig(format!(
                "unknown network policy {other:?}: use none, public or all"
            ))),
        }
    }
}

/// A published port: connections to `host` on the host's 127.0.0.1 are
/// forwarded to `guest` inside the sandbox (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Port on the host's loopback.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

impl std::str::FromStr for PublishedPort {
    type Err = MicrosandboxError;

    /// `HOST:GUEST`, both 1-65535.
    fn from_str(s: &str) -> MicrosandboxResult<Self> {
        let bad = || {
            MicrosandboxError::InvalidConfig(format!(
                "invalid port mapping {s:?}: use HOST:GUEST, both 1-65535"
            ))
        };
        let (host, guest) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
        Ok(Self {
            host: port(host)?,
            guest: port(guest)?,
        })
    }
}

/// A sandbox's network: the policy, extra allowed destinations and
/// published ports. Fixed at creation, recorded with the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Which destinations the guest may reach.
    pub policy: NetworkPolicy,
    /// Hosts, addresses or CIDRs allowed on top of the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowEntry>,
    /// Host ports forwarded into the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

impl NetworkConfig {
    /// No network: what a sandbox recorded before networking existed had.
    pub fn none() -> Self {
        Self {
            policy: NetworkPolicy::None,
            ..Self::default()
        }
    }

    /// Whether the guest gets a network interface.
    pub fn has_interface(&self) -> bool {
        self.policy != NetworkPolicy::None
    }

    /// Check the combination (`InvalidConfig`): an allow-list or published
    /// ports need an interface, and a host port is published once.
    pub fn validate(&self) -> MicrosandboxResult<()> {
        if !self.has_interface() && (!self.allow.is_empty() || !self.ports.is_empty()) {
            return Err(MicrosandboxError::InvalidConfig(
                "allow-list entries and published ports need a network: use policy public or all"
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for port in &self.ports {
            // Port 0 would make the host pick one: a port nobody asked for.
            if port.host == 0 || port.guest == 0 {
                return Err(MicrosandboxError::InvalidConfig(format!(
                    "port {}:{} cannot be published: use ports 1-65535",
                    port.host, port.guest
                )));
            }
            if !seen.insert(port.host) {
                return Err(MicrosandboxError::InvalidConfig(format!(
                    "host port {} is published twice",
                    port.host
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_unknown_ones_are_invalid_config() {
        for p in [
            NetworkPolicy::None,
            NetworkPolicy::Public,
            NetworkPolicy::All,
        ] {
            assert_eq!(p.as_str().parse::<NetworkPolicy>().unwrap(), p);
        }
        let err = "private".parse::<NetworkPolicy>().unwrap_err();
        assert_eq!(err.kind(), "InvalidConfig");
        assert!(err.to_string().contains("none, public or all"), "{err}");
    }

    #[test]
    fn port_zero_is_invalid_config() {
        for (host, guest) in [(0, 80), (8080, 0)] {
            let config = NetworkConfig {
                ports: vec![PublishedPort { host, guest }],
                ..NetworkConfig::default()
            };
            assert_eq!(config.validate().unwrap_err().kind(), "InvalidConfig");
        }
    }

    #[test]
    fn port_mappings_parse() {
        let p: PublishedPort = "8080:80".parse().unwrap();
        assert_eq!((p.host, p.guest), (8080, 80));
        for bad in ["8080", "0:80", "80:0", "a:80", "70000:80", "80:80:80", ""] {
            assert_eq!(
                bad.parse::<PublishedPort>().unwrap_err().kind(),
                "InvalidConfig",
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_are_validated() {
        let mut config = NetworkConfig {
            policy: NetworkPolicy::None,
            allow: vec![],
            ports: vec!["8080:80".parse().unwrap()],
        };
        assert_eq!(config.validate().unwrap_err().kind(), "InvalidConfig");
        config.policy = NetworkPolicy::Public;
        config.validate().unwrap();
        config.ports.push("8080:81".parse().unwrap());
        assert_eq!(config.validate().unwrap_err().kind(), "InvalidConfig");
    }

    #[test]
    fn configs_round_trip_through_json() {
        let config = NetworkConfig {
            policy: NetworkPolicy::Public,
            allow: vec![
                "10.199.0.0/30".parse().unwrap(),
                "example.org".parse().unwrap(),
            ],
            ports: vec!["8080:80".parse().unwrap()],
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<NetworkConfig>(&json).unwrap(),
            config
        );
        assert_eq!(
            serde_json::from_str::<NetworkConfig>(r#"{"policy":"none"}"#).unwrap(),
            NetworkConfig::none()
        );
        assert_eq!(NetworkConfig::default().policy, NetworkPolicy::Public);
    }
}
