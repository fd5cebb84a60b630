use super::*;
use std::io::{Read, Write};
use std::process::Command;

fn link(name: &str, kind: Option<&str>, mac: Option<[u8; 6]>, mtu: u32) -> Link {
    Link {
        index: 2,
        name: name.into(),
        mac,
        mtu,
        kind: kind.map(Into::into),
        loopback: false,
    }
}

#[test]
fn links_runv_cannot_attach_are_named_with_the_reason() {
    let bytes = [2, 0x42, 0xac, 0x11, 0, 2];
    let mac = Some(bytes);
    assert_eq!(
        check_link(&link("eth0", Some("veth"), mac, 1500)).unwrap(),
        bytes
    );
    let e = check_link(&link("mvt0", Some("macvtap"), mac, 1500)).unwrap_err();
    assert!(
        e.to_string().contains("mvt0") && e.to_string().contains("macvtap"),
        "{e}"
    );
    let e = check_link(&link("wg0", None, None, 1420)).unwrap_err();
    assert!(
        e.to_string().contains("wg0") && e.to_string().contains("MAC"),
        "{e}"
    );
    let e = check_link(&link("m0", Some("veth"), Some([1, 0, 0, 0, 0, 1]), 1500)).unwrap_err();
    assert!(e.to_string().contains("unicast"), "{e}");
    assert!(check_link(&link("e", Some("veth"), mac, 20)).is_err());
}

#[test]
fn the_guest_config_names_devices_and_keeps_only_what_is_on_them() {
    let eth0 = link("eth0", Some("veth"), Some([2, 0, 0, 0, 0, 2]), 1400);
    let mut other = link("other", Some("veth"), Some([2, 0, 0, 0, 0, 3]), 1500);
    other.index = 7;
    let net = |s: &str, p| runv_agent_protocol::IpNet::new(s.parse().unwrap(), p).unwrap();
    let ns = discover::Namespace {
        links: vec![eth0.clone(), other],
        addresses: vec![(2, net("10.0.0.2", 24)), (7, net("10.1.0.2", 24))],
        routes: vec![
            (
                Some(2),
                runv_agent_protocol::NetRoute {
                    destination: net("0.0.0.0", 0),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    device: None,
                    source: None,
                    metric: None,
                    on_link: false,
                },
            ),
            (
                Some(7),
                runv_agent_protocol::NetRoute {
                    destination: net("10.2.0.0", 16),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    device: None,
                    source: None,
                    metric: None,
                    on_link: false,
                },
            ),
        ],
        neighbors: vec![(2, "10.0.0.1".parse().unwrap(), [2, 0, 0, 0, 0, 1])],
    };
    let c = discover::guest_config(&ns, &[&eth0]);
    assert_eq!(c.interfaces.len(), 1);
    assert_eq!(c.interfaces[0].mac, "02:00:00:00:00:02");
    assert_eq!(c.interfaces[0].mtu, 1400);
    assert_eq!(c.interfaces[0].addresses, vec![net("10.0.0.2", 24)]);
    assert_eq!(c.routes.len(), 1, "{:?}", c.routes);
    assert_eq!(c.routes[0].device.as_deref(), Some("eth0"));
    assert_eq!(c.neighbors[0].device, "eth0");
}

/// A named network namespace for a test, removed on drop.
struct TestNetns(String);

impl TestNetns {
    fn new(tag: &str) -> Self {
        let name = format!("runv-t{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        TestNetns(name)
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
    fn run(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend(args);
        ip(&a)
    }
    fn tc(&self, args: &[&str]) -> String {
        let out = Command::new("tc")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("tc (iproute2)");
        assert!(out.status.success(), "tc {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A: `eth0` (02:00:00:0a:09:02, 10.9.0.2/24, MTU 1400, default via 10.9.0.1, a
/// permanent neighbour, fd00:9::2/64); B: its peer with 10.9.0.1/24.
fn pair(tag: &str) -> (TestNetns, TestNetns) {
    let a = TestNetns::new(&format!("{tag}a"));
    let b = TestNetns::new(&format!("{tag}b"));
    a.run(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", &b.0,
    ]);
    a.run(&[
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:0a:09:02",
        "mtu",
        "1400",
        "up",
    ]);
    a.run(&["addr", "add", "10.9.0.2/24", "dev", "eth0"]);
    a.run(&["addr", "add", "fd00:9::2/64", "dev", "eth0", "nodad"]);
    a.run(&["route", "add", "default", "via", "10.9.0.1"]);
    a.run(&[
        "neigh",
        "add",
        "10.9.0.7",
        "lladdr",
        "02:00:00:00:00:07",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    b.run(&["link", "set", "peer0", "mtu", "1400", "up"]);
    b.run(&["addr", "add", "10.9.0.1/24", "dev", "peer0"]);
    (a, b)
}

#[test]
#[ignore = "needs root: creates network namespaces, veths and taps"]
fn root_attach_reads_the_namespace_and_redirects_both_ways_then_detach_cleans_up() {
    let (a, b) = pair("rd");
    let before_links = a.run(&["-o", "link"]);
    let att = attach(&a.path()).unwrap();
    assert_eq!(att.taps.len(), 1);
    let tap = &att.taps[0];
    assert_eq!(
        (tap.link.as_str(), tap.name.as_str(), tap.mtu),
        ("eth0", "runvtap0", 1400)
    );
    assert_eq!(tap.mac, [2, 0, 0, 0x0a, 9, 2]);
    let c = &att.config;
    assert_eq!(c.interfaces[0].name, "eth0");
    assert_eq!(c.interfaces[0].mac, "02:00:00:0a:09:02");
    let addrs: Vec<String> = c.interfaces[0]
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert!(
        addrs.contains(&"10.9.0.2/24".into()) && addrs.contains(&"fd00:9::2/64".into()),
        "{addrs:?}"
    );
    let default = c
        .routes
        .iter()
        .find(|r| r.destination.prefix_len == 0)
        .expect("default route");
    assert_eq!(default.gateway, Some("10.9.0.1".parse().unwrap()));
    assert_eq!(default.device.as_deref(), Some("eth0"));
    assert!(
        c.routes
            .iter()
            .all(|r| r.destination.to_string() != "10.9.0.0/24"),
        "no kernel prefix route: {:?}",
        c.routes
    );
    assert_eq!(c.neighbors.len(), 1);
    assert_eq!(c.neighbors[0].mac, "02:00:00:00:00:07");
    assert!(a.run(&["link", "show", "runvtap0"]).contains("mtu 1400"));
    for dev in ["eth0", "runvtap0"] {
        let f = a.tc(&["filter", "show", "dev", dev, "ingress"]);
        assert!(f.contains("mirred") && f.contains("Redirect"), "{dev}: {f}");
    }

    // veth -> tap: B's ARP for 10.9.0.2 comes out of the tap's fd (after a 10-byte
    // virtio_net_hdr, the tap's default).
    let mut tapf = std::fs::File::from(tap.fd.try_clone().unwrap());
    // A datagram from B to 10.9.0.2 makes B resolve it (ARP, retried for 3 s).
    runv_rtnl::in_netns(&b.path(), || {
        let s = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
        s.send_to(b"x", "10.9.0.2:9").unwrap();
    })
    .unwrap();
    let mut frame = [0u8; 2048];
    let n = read_with_limit(&mut tapf, &mut frame);
    assert!(n > 10 + 14, "a frame from the veth reached the tap");
    let eth = &frame[10..n];
    assert_eq!(
        &eth[12..14],
        &[0x08, 0x06],
        "an ARP frame: {:02x?}",
        &eth[..14.min(eth.len())]
    );
    // tap -> veth: answer it; B learns 10.9.0.2's MAC from our reply.
    let sender_mac = &eth[6..12];
    let mut reply = vec![0u8; 10];
    reply.extend_from_slice(sender_mac);
    reply.extend_from_slice(&tap.mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&tap.mac);
    reply.extend_from_slice(&[10, 9, 0, 2]);
    reply.extend_from_slice(sender_mac);
    reply.extend_from_slice(&[10, 9, 0, 1]);
    tapf.write_all(&reply).unwrap();
    let mut neigh = String::new();
    for _ in 0..50 {
        neigh = b.run(&["neigh", "show", "10.9.0.2"]);
        if neigh.contains("lladdr") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        neigh.contains("02:00:00:0a:09:02"),
        "B learned the guest's MAC through the tap: {neigh}"
    );

    let links = att.links();
    drop(tapf);
    drop(att);
    assert!(
        !a.run(&["-o", "link"]).contains("runvtap0"),
        "the tap went with its fd"
    );
    assert!(detach(&a.path(), &links).is_empty());
    assert!(a
        .tc(&["qdisc", "show", "dev", "eth0", "ingress"])
        .is_empty());
    assert_eq!(
        a.run(&["-o", "link"]).lines().count(),
        before_links.lines().count()
    );
    // Twice is fine; a namespace that is gone is not a warning either.
    assert!(detach(&a.path(), &links).is_empty());
    assert!(detach(std::path::Path::new("/run/netns/runv-absent"), &links).is_empty());
}

fn read_with_limit(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
            let n = f.read(buf).unwrap();
            // IPv6 router/neighbour solicitations of B may come first: keep ARP.
            if n > 24 && buf[10 + 12..10 + 14] == [0x08, 0x06] {
                return n;
            }
        }
    }
    0
}

#[test]
#[ignore = "needs root: creates network namespaces and links"]
fn root_only_lo_is_no_nic_and_an_unsupported_link_fails_naming_it_leaving_nothing() {
    let empty = TestNetns::new("lo");
    let att = attach(&empty.path()).unwrap();
    assert!(att.taps.is_empty() && att.config.interfaces.is_empty());

    let (a, _b) = pair("bad");
    a.run(&["link", "add", "mvt0", "link", "eth0", "type", "macvtap"]);
    let e = attach(&a.path()).unwrap_err().to_string();
    assert!(e.contains("mvt0") && e.contains("macvtap"), "{e}");
    assert!(!a.run(&["-o", "link"]).contains("runvtap"));
    assert!(a
        .tc(&["qdisc", "show", "dev", "eth0", "ingress"])
        .is_empty());
}

#[test]
#[ignore = "needs root: creates a network namespace and taps"]
fn root_the_self_test_passes_and_leaves_nothing_here() {
    let before = std::fs::read_dir("/sys/class/net").unwrap().count();
    self_test().unwrap();
    assert_eq!(std::fs::read_dir("/sys/class/net").unwrap().count(), before);
}
