//! The sandbox's network as the guest is to see it: interfaces (matched by MAC),
//! addresses, routes and neighbours, read by the host from the sandbox's network
//! namespace, and the DNS relay for a resolver the guest cannot reach itself.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address with its prefix length: `172.17.0.2/16`, `fd00::2/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpNet {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    /// The address and prefix, checked: at most 32 (IPv4) or 128 (IPv6).
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(IpNet {
            address,
            prefix_len,
        })
    }

    /// Whether `prefix_len` fits the address family.
    pub fn is_valid(&self) -> bool {
        IpNet::new(self.address, self.prefix_len).is_some()
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// One guest NIC: a virtio-net device whose MAC is `mac`, renamed to `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// The name in the guest: the host interface's (`eth0`).
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, lower case: the host interface's MAC, which the VMM gave
    /// the virtio-net device.
    pub mac: String,
    pub mtu: u32,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
}

/// A route of the main table. The kernel's own routes (the prefix routes of the
/// addresses, local routes) are not sent: the guest kernel makes them itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRoute {
    /// `0.0.0.0/0` or `::/0` for a default route.
    pub destination: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The interface (by its guest name), if the route names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Preferred source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// `true` for a route without gateway that reaches its destination on the link
    /// (`scope link`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_link: bool,
}

/// A permanent neighbour entry (ARP/NDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetNeighbor {
    pub address: IpAddr,
    pub mac: String,
    /// The interface, by its guest name.
    pub device: String,
}

/// A DNS server the guest cannot reach by itself (Docker's embedded DNS at
/// 127.0.0.11, served by iptables rules in the sandbox's namespace on the host). The
/// agent serves `address:53` (UDP and TCP) on the guest's loopback and relays every
/// query over a vsock stream to the host port `vsock_port`, where a runv process in
/// the sandbox's network namespace asks `address:53` there. On the stream each DNS
/// message is framed as in DNS over TCP (RFC 1035 4.2.2: a 2-byte big-endian length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRelay {
    pub address: IpAddr,
    pub vsock_port: u32,
}

/// The whole network of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    #[serde(default)]
    pub interfaces: Vec<NetInterface>,
    #[serde(default)]
    pub routes: Vec<NetRoute>,
    #[serde(default)]
    pub neighbors: Vec<NetNeighbor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_relay: Option<DnsRelay>,
}

/// Checks a MAC address as the protocol writes it: six lower- or upper-case hex
/// pairs separated by `:`. Returns the bytes.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Writes MAC bytes as the protocol does: lower case, `:`-separated.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_bad_ones_are_refused() {
        let m = parse_mac("02:42:AC:11:00:02").unwrap();
        assert_eq!(m, [2, 0x42, 0xac, 0x11, 0, 2]);
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "02-42-ac-11-00-02",
            "zz:42:ac:11:00:02",
            "+2:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefix_lengths_fit_the_family() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert!(IpNet::new(v4, 32).is_some());
        assert!(IpNet::new(v4, 33).is_none());
        assert!(IpNet::new(v6, 128).is_some());
        assert!(IpNet::new(v6, 129).is_none());
        assert!(!IpNet {
            address: v4,
            prefix_len: 40
        }
        .is_valid());
        assert_eq!(IpNet::new(v6, 64).unwrap().to_string(), "fd00::1/64");
    }

    #[test]
    fn the_wire_form_is_plain_json() {
        let c = NetworkConfig {
            interfaces: vec![NetInterface {
                name: "eth0".into(),
                mac: "02:42:ac:11:00:02".into(),
                mtu: 1500,
                addresses: vec![IpNet::new("172.17.0.2".parse().unwrap(), 16).unwrap()],
            }],
            routes: vec![NetRoute {
                destination: IpNet::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
                gateway: Some("172.17.0.1".parse().unwrap()),
                device: Some("eth0".into()),
                source: None,
                metric: None,
                on_link: false,
            }],
            neighbors: vec![],
            dns_relay: None,
        };
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j["interfaces"][0]["addresses"][0],
            serde_json::json!({"address": "172.17.0.2", "prefix_len": 16})
        );
        assert_eq!(j["routes"][0]["gateway"], "172.17.0.1");
        assert!(j["routes"][0].get("on_link").is_none());
        let back: NetworkConfig = serde_json::from_value(j).unwrap();
        assert_eq!(back, c);
        let empty: NetworkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, NetworkConfig::default());
    }
}
