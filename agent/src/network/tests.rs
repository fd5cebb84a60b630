use super::*;
use runv_agent_protocol::{NetInterface, NetNeighbor};
use serde_json::Value;

fn net(s: &str, p: u8) -> IpNet {
    IpNet {
        address: s.parse().unwrap(),
        prefix_len: p,
    }
}

/// The protocol doc's example.
fn example() -> NetworkConfig {
    NetworkConfig {
        interfaces: vec![NetInterface {
            name: "eth0".into(),
            mac: "02:42:ac:11:00:02".into(),
            mtu: 1500,
            addresses: vec![net("172.17.0.2", 16), net("fd00::2", 64)],
        }],
        routes: vec![NetRoute {
            destination: net("0.0.0.0", 0),
            gateway: Some("172.17.0.1".parse().unwrap()),
            device: Some("eth0".into()),
            source: None,
            metric: None,
            on_link: false,
        }],
        neighbors: vec![NetNeighbor {
            address: "172.17.0.1".parse().unwrap(),
            mac: "02:42:8e:00:00:01".into(),
            device: "eth0".into(),
        }],
        dns_relay: Some(DnsRelay {
            address: "127.0.0.11".parse().unwrap(),
            vsock_port: 53,
        }),
    }
}

fn route(dst: IpNet) -> NetRoute {
    NetRoute {
        destination: dst,
        gateway: None,
        device: Some("eth0".into()),
        source: None,
        metric: None,
        on_link: false,
    }
}

/// The refusal's field and message, asserting it is `invalid_argument`.
fn refused(c: &NetworkConfig) -> (String, String) {
    let e = validate(c).expect_err("should be refused");
    let r = e.response();
    assert_eq!(r.code, ErrorCode::InvalidArgument, "{e}");
    (r.field.unwrap_or_default(), r.message)
}

#[test]
fn the_protocol_example_is_valid() {
    let p = validate(&example()).unwrap();
    assert_eq!(p.interfaces[0].mac, [0x02, 0x42, 0xac, 0x11, 0, 2]);
    assert_eq!(p.interfaces[0].addresses.len(), 2);
    assert_eq!(p.neighbors[0].mac, [0x02, 0x42, 0x8e, 0, 0, 1]);
    assert_eq!(p.routes.len(), 1);
    assert!(p.dns_relay.is_some());
    validate(&NetworkConfig::default()).unwrap();
}

#[test]
fn interface_names_are_checked() {
    for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a:1", ".", "..", "lo"] {
        let mut c = example();
        c.interfaces[0].name = bad.into();
        let (field, msg) = refused(&c);
        assert_eq!(field, "network.interfaces[0].name", "{bad:?}: {msg}");
    }
    let mut c = example();
    c.interfaces[0].name = "fifteen-bytes-x".into();
    c.routes.clear();
    c.neighbors.clear();
    validate(&c).unwrap();
    let mut c = example();
    let mut second = c.interfaces[0].clone();
    second.mac = "02:42:ac:11:00:03".into();
    c.interfaces.push(second);
    let (field, msg) = refused(&c);
    assert_eq!(field, "network.interfaces[1].name");
    assert!(msg.contains("eth0 names two interfaces"), "{msg}");
}

#[test]
fn macs_are_checked() {
    for bad in [
        "02:42:ac:11:00",
        "zz:42:ac:11:00:02",
        "00:00:00:00:00:00",
        "01:00:5e:00:00:01",
    ] {
        let mut c = example();
        c.interfaces[0].mac = bad.into();
        let (field, msg) = refused(&c);
        assert_eq!(field, "network.interfaces[0].mac");
        assert!(msg.contains(bad), "{msg}");
    }
    let mut c = example();
    let mut second = c.interfaces[0].clone();
    second.name = "eth1".into();
    second.mac = "02:42:AC:11:00:02".into(); // the same MAC in upper case
    c.interfaces.push(second);
    assert_eq!(refused(&c).0, "network.interfaces[1].mac");
    let mut c = example();
    c.neighbors[0].mac = "nope".into();
    assert_eq!(refused(&c).0, "network.neighbors[0].mac");
}

#[test]
fn mtus_are_checked() {
    for (mtu, ok) in [
        (0, false),
        (1279, false),
        (1280, true),
        (65535, true),
        (65536, false),
    ] {
        let mut c = example();
        c.interfaces[0].mtu = mtu;
        assert_eq!(validate(&c).is_ok(), ok, "{mtu}");
    }
    let mut c = example();
    c.interfaces[0].addresses.pop(); // IPv4 only: 68 is the minimum
    c.interfaces[0].mtu = 68;
    validate(&c).unwrap();
    c.interfaces[0].mtu = 67;
    let (field, msg) = refused(&c);
    assert_eq!(field, "network.interfaces[0].mtu");
    assert!(msg.contains("MTU 67 of eth0"), "{msg}");
}

#[test]
fn addresses_are_checked() {
    let cases = [
        (net("172.17.0.2", 33), "too long"),
        (net("fd00::2", 129), "too long"),
        (net("0.0.0.0", 8), "not a unicast"),
        (net("224.0.0.1", 4), "not a unicast"),
        (net("ff02::1", 16), "not a unicast"),
        (net("172.17.0.2", 24), "given twice"),
    ];
    for (a, why) in cases {
        let mut c = example();
        c.interfaces[0].addresses.push(a);
        let (field, msg) = refused(&c);
        assert_eq!(field, "network.interfaces[0].addresses[2]", "{a}");
        assert!(msg.contains(why), "{a}: {msg}");
    }
}

#[test]
fn routes_are_checked() {
    let mut c = example();
    c.routes.push(route(net("10.1.0.0", 16)));
    c.routes.push(NetRoute {
        on_link: true,
        ..route(net("10.2.0.0", 16))
    });
    c.routes.push(NetRoute {
        gateway: Some("fd00::1".parse().unwrap()),
        device: None,
        metric: Some(10),
        ..route(net("::", 0))
    });
    c.routes.push(route(net("127.0.0.0", 8)));
    c.routes.last_mut().unwrap().device = Some("lo".into());
    validate(&c).unwrap();

    let bad = [
        (route(net("10.1.0.0", 33)), "destination", "too long"),
        (route(net("10.1.2.3", 16)), "destination", "host bits"),
        (route(net("fd00::1", 64)), "destination", "host bits"),
        (
            NetRoute {
                device: Some("eth9".into()),
                ..route(net("10.1.0.0", 16))
            },
            "device",
            "no interface \"eth9\"",
        ),
        (
            NetRoute {
                device: None,
                ..route(net("10.1.0.0", 16))
            },
            "device",
            "neither gateway nor device",
        ),
        (
            NetRoute {
                device: None,
                on_link: true,
                gateway: Some("10.0.0.1".parse().unwrap()),
                ..route(net("10.1.0.0", 16))
            },
            "device",
            "names no device",
        ),
        (
            NetRoute {
                gateway: Some("fd00::1".parse().unwrap()),
                ..route(net("10.1.0.0", 16))
            },
            "gateway",
            "not of the family",
        ),
        (
            NetRoute {
                gateway: Some("0.0.0.0".parse().unwrap()),
                ..route(net("10.1.0.0", 16))
            },
            "gateway",
            "not a unicast",
        ),
        (
            NetRoute {
                source: Some("fd00::2".parse().unwrap()),
                ..route(net("10.1.0.0", 16))
            },
            "source",
            "not of the family",
        ),
    ];
    for (r, field, why) in bad {
        let mut c = example();
        c.routes.push(r.clone());
        let (f, msg) = refused(&c);
        assert_eq!(f, format!("network.routes[1].{field}"), "{r:?}: {msg}");
        assert!(msg.contains(why), "{r:?}: {msg}");
    }
}

#[test]
fn neighbours_and_the_relay_are_checked() {
    let mut c = example();
    c.neighbors[0].device = "eth1".into();
    assert_eq!(refused(&c).0, "network.neighbors[0].device");
    let mut c = example();
    c.neighbors[0].address = "ff02::1".parse().unwrap();
    assert_eq!(refused(&c).0, "network.neighbors[0].address");
    let mut c = example();
    c.dns_relay.as_mut().unwrap().address = "0.0.0.0".parse().unwrap();
    assert_eq!(refused(&c).0, "network.dns_relay.address");
    let mut c = example();
    c.dns_relay.as_mut().unwrap().vsock_port = u32::MAX;
    assert_eq!(refused(&c).0, "network.dns_relay.vsock_port");
}

#[test]
fn lists_are_bounded() {
    let mut c = example();
    c.routes = vec![route(net("10.1.0.0", 16)); MAX_ROUTES + 1];
    let (field, msg) = refused(&c);
    assert_eq!(field, "network.routes");
    assert!(msg.contains("at most 1024"), "{msg}");
}

#[test]
fn host_mode_validates_and_changes_nothing() {
    let n = Network::new(false);
    // No link has this MAC here and no relay can start: neither is tried.
    let mut c = example();
    c.interfaces[0].mac = "02:00:00:de:ad:01".into();
    n.configure(&c).unwrap();
    n.configure(&c).unwrap();
    assert!(n.relay.lock().unwrap().is_none());
    c.interfaces[0].mtu = 1;
    assert_eq!(
        n.configure(&c).unwrap_err().response().code,
        ErrorCode::InvalidArgument
    );
}

#[test]
fn a_second_relay_is_refused_and_the_same_one_is_a_no_op() {
    let n = Network::new(false);
    *n.relay.lock().unwrap() = example().dns_relay;
    let mut c = example();
    n.configure(&c).unwrap();
    c.dns_relay.as_mut().unwrap().vsock_port = 54;
    let e = n.configure(&c).unwrap_err();
    let r = e.response();
    assert_eq!(r.code, ErrorCode::InvalidState);
    assert!(r.message.contains("127.0.0.11"), "{}", r.message);
    c.dns_relay = None;
    n.configure(&c).unwrap();
}

#[test]
fn errors_answer_with_codes_and_items() {
    let e = NetworkError::Netlink {
        item: "route 10.0.0.0/8 via 10.9.9.9 dev eth0".into(),
        cause: NetlinkError::Kernel {
            errno: libc::ENETUNREACH,
            message: None,
        },
    };
    let r = e.response();
    assert_eq!(r.code, ErrorCode::Internal);
    assert!(r
        .message
        .starts_with("route 10.0.0.0/8 via 10.9.9.9 dev eth0: "));
    assert!(r.message.contains("unreachable"), "{}", r.message);
    let e = NetworkError::NoSuchLink {
        field: "network.interfaces[0].mac".into(),
        mac: "02:00:00:00:00:01".into(),
        seen: describe_links(&[Link {
            index: 1,
            name: "lo".into(),
            mac: Some([0; 6]),
            up: true,
        }]),
    };
    let r = e.response();
    assert_eq!(r.code, ErrorCode::InvalidArgument);
    assert_eq!(
        r.message,
        "network.interfaces[0].mac: no link has MAC 02:00:00:00:00:01 (links: lo (1, 00:00:00:00:00:00))"
    );
}

#[test]
fn helpers() {
    assert_eq!(network_of(&net("10.1.2.3", 16)).to_string(), "10.1.0.0");
    assert_eq!(network_of(&net("10.1.2.3", 0)).to_string(), "0.0.0.0");
    assert_eq!(network_of(&net("10.1.2.3", 32)).to_string(), "10.1.2.3");
    assert_eq!(network_of(&net("fd00::1:2", 112)).to_string(), "fd00::1:0");
    assert_eq!(network_of(&net("fd00::1", 0)).to_string(), "::");
    let r = NetRoute {
        gateway: Some("169.254.1.1".parse().unwrap()),
        source: Some("10.0.0.2".parse().unwrap()),
        metric: Some(5),
        on_link: true,
        ..route(net("0.0.0.0", 0))
    };
    assert_eq!(
        describe_route(&r),
        "route 0.0.0.0/0 via 169.254.1.1 dev eth0 src 10.0.0.2 metric 5 onlink"
    );
    assert_eq!(describe_links(&[]), "none");
}

// ---- Tests that need root: each runs in a network namespace of its own. ----

/// Runs `f` on a thread of its own in a new network namespace (a namespace is per
/// thread for unshare), so the host's network is never touched.
pub(super) fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) (needs root)");
            f()
        })
        .join()
        .unwrap()
    })
}

/// `ip ARGS` in the calling thread's namespace (the child inherits it).
fn ip(args: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip_json(args: &str) -> Vec<Value> {
    serde_json::from_str(&ip(&format!("-j {args}"))).unwrap()
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// The fixture: a veth pair, `veth-a` with the example's MAC and its peer up.
fn veth_fixture() {
    ip("link add veth-a address 02:42:ac:11:00:02 type veth peer name veth-b");
    ip("link set veth-b up");
}

fn full_config() -> NetworkConfig {
    let mut c = example();
    c.dns_relay = None;
    c.interfaces[0].mtu = 1400;
    c.routes.push(NetRoute {
        on_link: true,
        ..route(net("10.9.0.0", 16))
    });
    c.routes.push(NetRoute {
        gateway: Some("169.254.1.1".parse().unwrap()),
        on_link: true,
        ..route(net("192.168.5.0", 24))
    });
    c.routes.push(NetRoute {
        gateway: Some("fd00::1".parse().unwrap()),
        metric: Some(1024),
        ..route(net("::", 0))
    });
    c.neighbors.push(NetNeighbor {
        address: "fd00::1".parse().unwrap(),
        mac: "02:42:8e:00:00:01".into(),
        device: "eth0".into(),
    });
    c
}

#[test]
#[ignore = "needs root: unshare(CLONE_NEWNET)"]
fn root_loopback_comes_up() {
    in_new_netns(|| {
        assert!(!flags(&ip_json("link show lo")[0]).contains(&"UP".to_string()));
        // With lo down nothing reaches 127.0.0.1.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(u.send_to(b"x", u.local_addr().unwrap()).is_err());
        loopback_up().unwrap();
        let lo = &ip_json("addr show lo")[0];
        assert!(flags(lo).contains(&"UP".to_string()), "{lo}");
        let l = std::net::TcpListener::bind("127.0.0.11:0").unwrap();
        std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::net::TcpListener::bind("[::1]:0").unwrap();
        loopback_up().unwrap(); // again: nothing to do
    });
}

#[test]
#[ignore = "needs root: unshare(CLONE_NEWNET), ip link add type veth"]
fn root_configure_applies_links_addresses_routes_and_neighbours() {
    in_new_netns(|| {
        veth_fixture();
        let n = Network::new(true);
        n.configure(&full_config()).unwrap();

        let link = &ip_json("addr show eth0")[0];
        assert_eq!(link["ifname"], "eth0");
        assert_eq!(link["address"], "02:42:ac:11:00:02");
        assert_eq!(link["mtu"], 1400);
        assert!(flags(link).contains(&"UP".to_string()), "{link}");
        let addrs: Vec<(String, u64, Value)> = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["local"].as_str().unwrap().to_string(),
                    a["prefixlen"].as_u64().unwrap(),
                    a.clone(),
                )
            })
            .collect();
        assert!(addrs.iter().any(|(a, p, _)| a == "172.17.0.2" && *p == 16));
        let v6 = addrs
            .iter()
            .find(|(a, p, _)| a == "fd00::2" && *p == 64)
            .expect("fd00::2/64");
        assert!(v6.2.get("tentative").is_none(), "DAD skipped: {}", v6.2);
        assert_eq!(v6.2["nodad"], true, "{}", v6.2);

        let routes = ip_json("route show");
        let find = |dst: &str| {
            routes
                .iter()
                .find(|r| r["dst"] == dst)
                .unwrap_or_else(|| panic!("no route {dst}: {routes:?}"))
                .clone()
        };
        let d = find("default");
        assert_eq!(d["gateway"], "172.17.0.1");
        assert_eq!(d["dev"], "eth0");
        assert_eq!(d["protocol"], "static");
        let l = find("10.9.0.0/16");
        assert_eq!(l["scope"], "link");
        let o = find("192.168.5.0/24");
        assert_eq!(o["gateway"], "169.254.1.1");
        assert!(o["flags"].as_array().unwrap().contains(&"onlink".into()));
        let routes6 = ip_json("-6 route show");
        let d6 = routes6
            .iter()
            .find(|r| r["dst"] == "default")
            .unwrap_or_else(|| panic!("{routes6:?}"));
        assert_eq!(d6["gateway"], "fd00::1");
        assert_eq!(d6["metric"], 1024);

        let neigh = ip_json("neigh show dev eth0");
        for a in ["172.17.0.1", "fd00::1"] {
            let e = neigh.iter().find(|e| e["dst"] == a).expect(a);
            assert_eq!(e["lladdr"], "02:42:8e:00:00:01");
            assert_eq!(e["state"][0], "PERMANENT");
        }
        let lo = &ip_json("link show lo")[0];
        assert!(flags(lo).contains(&"UP".to_string()));

        // Again, as a retrying host would: the same result, no error.
        n.configure(&full_config()).unwrap();
        assert_eq!(ip_json("addr show eth0")[0]["mtu"], 1400);
        assert_eq!(ip_json("neigh show dev eth0").len(), 2);
    });
}

#[test]
#[ignore = "needs root: unshare(CLONE_NEWNET), ip link add type veth"]
fn root_failures_name_what_failed() {
    in_new_netns(|| {
        veth_fixture();
        let n = Network::new(true);

        let mut c = full_config();
        c.interfaces[0].mac = "02:00:00:de:ad:01".into();
        let r = n.configure(&c).unwrap_err().response();
        eprintln!("{:?} {:?}: {}", r.code, r.field, r.message);
        assert_eq!(r.code, ErrorCode::InvalidArgument);
        assert_eq!(r.field.as_deref(), Some("network.interfaces[0].mac"));
        assert!(r.message.contains("02:00:00:de:ad:01"), "{}", r.message);
        assert!(
            r.message.contains("veth-a (") && r.message.contains("veth-b ("),
            "{}",
            r.message
        );
        // Nothing was changed.
        assert!(ip_json("link show veth-a")[0]["mtu"] != 1400);

        let mut c = full_config();
        c.interfaces[0].name = "veth-b".into();
        c.routes.clear();
        c.neighbors.clear();
        let r = n.configure(&c).unwrap_err().response();
        eprintln!("{:?} {:?}: {}", r.code, r.field, r.message);
        assert_eq!(r.code, ErrorCode::InvalidArgument);
        assert!(
            r.message
                .contains("cannot rename link veth-a (02:42:ac:11:00:02) to veth-b"),
            "{}",
            r.message
        );

        let mut c = full_config();
        c.routes.push(NetRoute {
            gateway: Some("10.99.0.1".parse().unwrap()),
            ..route(net("10.50.0.0", 16))
        });
        let r = n.configure(&c).unwrap_err().response();
        eprintln!("{:?} {:?}: {}", r.code, r.field, r.message);
        assert_eq!(r.code, ErrorCode::Internal);
        assert!(
            r.message
                .starts_with("route 10.50.0.0/16 via 10.99.0.1 dev eth0: "),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("os error"),
            "the errno text: {}",
            r.message
        );
    });
}
