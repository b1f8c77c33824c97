//! The policy's decision on one destination address: the ranges `public`
//! refuses, the allow-list (addresses, CIDRs, host names resolved when the
//! network process starts) that overrides them, and the verdict.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

use super::{NetworkConfig, NetworkPolicy};
use crate::error::{MicrosandboxError, MicrosandboxResult};

/// One allow-list entry: an address or CIDR, or a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AllowEntry {
    /// An address range (a single address is a `/32` or `/128`).
    Cidr {
        /// The network address (host bits zero).
        addr: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// A DNS name, allowed at the addresses it resolves to.
    Host(String),
}

impl std::str::FromStr for AllowEntry {
    type Err = MicrosandboxError;

    /// `IP`, `IP/PREFIX` or a host name (letters, digits, `-`, `.`).
    fn from_str(s: &str) -> MicrosandboxResult<Self> {
        let invalid = |why: &str| {
            MicrosandboxError::InvalidConfig(format!(
                "invalid allow-list entry {s:?}: {why} (use an address, a CIDR such as 10.0.0.0/8, or a host name)"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| invalid("not an IP address"))?;
                let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
                (addr, Some(prefix))
            }
            None => match s.parse::<IpAddr>() {
                Ok(addr) => (addr, None),
                Err(_) => {
                    return valid_host(s)
                        .map(Self::Host)
                        .ok_or_else(|| invalid("not a valid host name"));
                }
            },
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(invalid("prefix length too long"));
        }
        if mask(addr, prefix) != addr {
            return Err(invalid("host bits set after the prefix"));
        }
        Ok(Self::Cidr { addr, prefix })
    }
}

impl TryFrom<String> for AllowEntry {
    type Error = MicrosandboxError;
    fn try_from(s: String) -> MicrosandboxResult<Self> {
        s.parse()
    }
}

impl From<AllowEntry> for String {
    fn from(entry: AllowEntry) -> String {
        entry.to_string()
    }
}

impl std::fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cidr { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Self::Host(host) => f.write_str(host),
        }
    }
}

/// The verdict on one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Connect.
    Allow,
    /// Refuse, for this reason (logged by `msb-netd`).
    Deny(&'static str),
}

/// A configuration ready to decide: host names of the allow-list resolved,
/// the host's own addresses known.
#[derive(Debug, Clone)]
pub struct Policy {
    policy: NetworkPolicy,
    allowed: Vec<(IpAddr, u8)>,
    /// The addresses of the host's interfaces: under `public` they are the
    /// host itself, as its loopback is (a service bound to `0.0.0.0`
    /// answers on them too).
    host_addrs: Vec<IpAddr>,
}

impl Policy {
    /// Resolve `config`'s host names now (a name that does not resolve
    /// allows nothing and is logged, so a sandbox still starts offline).
    pub fn resolve(config: &NetworkConfig) -> Self {
        let mut allowed = Vec::new();
        for entry in &config.allow {
            match entry {
                AllowEntry::Cidr { addr, prefix } => allowed.push((*addr, *prefix)),
                AllowEntry::Host(host) => match (host.as_str(), 0).to_socket_addrs() {
                    Ok(addrs) => allowed.extend(addrs.map(|a| {
                        let ip = a.ip();
                        (ip, if ip.is_ipv4() { 32 } else { 128 })
                    })),
                    Err(e) => log::warn!("allow-list host {host} does not resolve: {e}"),
                },
            }
        }
        Self {
            policy: config.policy,
            allowed,
            host_addrs: host_addresses(),
        }
    }

    /// May the guest reach `dest` (the host-side address it maps to)?
    pub fn decide(&self, dest: IpAddr) -> Decision {
        let dest = canonical(dest);
        if self
            .allowed
            .iter()
            .any(|&(net, prefix)| same_family(net, dest) && mask(dest, prefix) == net)
        {
            return Decision::Allow;
        }
        match self.policy {
            NetworkPolicy::None => Decision::Deny("the sandbox has no network"),
            NetworkPolicy::All => Decision::Allow,
            NetworkPolicy::Public => match non_public_range(dest) {
                Some(range) => Decision::Deny(range),
                None if self.host_addrs.contains(&dest) => {
                    Decision::Deny("an address of the host itself")
                }
                None => Decision::Allow,
            },
        }
    }
}

/// Every address of the host's interfaces (none if they cannot be read).
fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .map(canonical)
        .collect()
}

/// The non-public range `addr` is in, if any.
pub(crate) fn non_public_range(addr: IpAddr) -> Option<&'static str> {
    match canonical(addr) {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(match o {
        [127, ..] => "loopback (127.0.0.0/8)",
        [0, ..] => "this network (0.0.0.0/8)",
        [10, ..] => "private (10.0.0.0/8)",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [169, 254, ..] => "link-local and cloud metadata (169.254.0.0/16)",
        [100, b, ..] if (64..128).contains(&b) => "shared/CGNAT (100.64.0.0/10)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if a >= 224 => "multicast, reserved or broadcast (224.0.0.0/3)",
        _ => return None,
    })
}

fn non_public_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    Some(if a.is_loopback() {
        "loopback (::1)"
    } else if a.is_unspecified() {
        "unspecified (::)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (fc00::/7)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local (fe80::/10)"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast (ff00::/8)"
    } else {
        return None;
    })
}

/// IPv4-mapped IPv6 addresses are decided as the IPv4 address they carry.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// `addr` with the bits after `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// `s` if it is a plausible DNS name: labels of 1-63 letters, digits or
/// `-` (not at either end), 253 characters at most.
fn valid_host(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // "300.1.1.1" is a mistyped address, not a name.
        && !s
            .trim_end_matches('.')
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(policy: NetworkPolicy, allow: &[&str]) -> Policy {
        Policy::resolve(&NetworkConfig {
            policy,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            ports: vec![],
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_refuses_every_non_public_range() {
        let p = policy(NetworkPolicy::Public, &[]);
        for denied in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                matches!(p.decide(ip(denied)), Decision::Deny(_)),
                "{denied}"
            );
        }
        for allowed in [
            "1.1.1.1",
            "151.101.0.223",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.169.0.1",
            "2a04:4e42::223",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(p.decide(ip(allowed)), Decision::Allow, "{allowed}");
        }
    }

    #[test]
    fn public_refuses_the_hosts_own_public_addresses() {
        let mut p = policy(NetworkPolicy::Public, &[]);
        p.host_addrs = vec![ip("203.0.113.7")];
        assert!(matches!(p.decide(ip("203.0.113.7")), Decision::Deny(_)));
        assert_eq!(p.decide(ip("203.0.113.8")), Decision::Allow);
        let mut all = policy(NetworkPolicy::All, &[]);
        all.host_addrs = vec![ip("203.0.113.7")];
        assert_eq!(all.decide(ip("203.0.113.7")), Decision::Allow);
        // The host's addresses are read: its loopback is among them.
        assert!(host_addresses().contains(&ip("127.0.0.1")));
    }

    #[test]
    fn all_allows_loopback_and_none_allows_nothing() {
        let all = policy(NetworkPolicy::All, &[]);
        assert_eq!(all.decide(ip("127.0.0.1")), Decision::Allow);
        assert_eq!(all.decide(ip("10.0.0.1")), Decision::Allow);
        let none = policy(NetworkPolicy::None, &[]);
        assert!(matches!(none.decide(ip("1.1.1.1")), Decision::Deny(_)));
    }

    #[test]
    fn the_allow_list_opens_ranges_under_public() {
        let p = policy(
            NetworkPolicy::Public,
            &["10.199.0.0/30", "192.168.7.7", "fd00::/8"],
        );
        assert_eq!(p.decide(ip("10.199.0.2")), Decision::Allow);
        assert!(matches!(p.decide(ip("10.199.0.4")), Decision::Deny(_)));
        assert_eq!(p.decide(ip("192.168.7.7")), Decision::Allow);
        assert!(matches!(p.decide(ip("192.168.7.8")), Decision::Deny(_)));
        assert_eq!(p.decide(ip("fd12::1")), Decision::Allow);
        assert_eq!(p.decide(ip("::ffff:10.199.0.1")), Decision::Allow);
        let hosts = policy(NetworkPolicy::Public, &["localhost"]);
        assert_eq!(hosts.decide(ip("127.0.0.1")), Decision::Allow);
    }

    #[test]
    fn entries_parse_or_fail_as_invalid_config() {
        assert_eq!(
            "10.0.0.0/8".parse::<AllowEntry>().unwrap(),
            AllowEntry::Cidr {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            "1.2.3.4".parse::<AllowEntry>().unwrap().to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(
            "PyPI.org".parse::<AllowEntry>().unwrap(),
            AllowEntry::Host("pypi.org".into())
        );
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "300.1.1.1/8",
            "300.1.1.1",
            "a b",
            "-x.org",
            "",
            "x/8",
        ] {
            let err = bad.parse::<AllowEntry>().unwrap_err();
            assert_eq!(err.kind(), "InvalidConfig", "{bad}");
            assert!(err.to_string().contains("allow-list"), "{err}");
        }
    }
}
