//! `ip -json`'s answers read, and the tap and redirects added to and taken from a real
//! network namespace (root only) with a veth as a CNI bridge plugin leaves it.

use super::*;

const LINKS: &str = r#"[
 {"ifindex":1,"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00",
  "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
 {"ifindex":3,"ifname":"eth0","mtu":1450,"link_type":"ether","address":"0a:58:0a:58:00:05",
  "addr_info":[{"family":"inet","local":"10.88.0.5","prefixlen":16},
               {"family":"inet6","local":"fe80::1","prefixlen":64}]}
]"#;
const ROUTES: &str = r#"[{"dst":"default","gateway":"10.88.0.1","dev":"eth0","flags":[]}]"#;

#[test]
fn the_cni_interface_is_read_with_its_gateway_and_mtu() {
    let nic = parse(LINKS, ROUTES).unwrap().unwrap();
    assert_eq!(
        nic,
        PodNic {
            name: "eth0".into(),
            mac: "0a:58:0a:58:00:05".into(),
            address: Ipv4Addr::new(10, 88, 0, 5),
            prefix: 16,
            gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
            mtu: 1450,
        }
    );
    assert_eq!(
        nic.kernel_arg(),
        "vessel.net=0a:58:0a:58:00:05,10.88.0.5/16,10.88.0.1,1450"
    );
    assert_eq!(nic.nic_arg(), "tap:vsltap0,mac=0a:58:0a:58:00:05");
    let without_route = parse(LINKS, "[]").unwrap().unwrap();
    assert_eq!(without_route.gateway, None);
    assert!(without_route.kernel_arg().ends_with("/16,,1450"));
}

#[test]
fn a_namespace_without_an_address_has_no_nic_and_odd_answers_are_errors() {
    let lo_only = r#"[{"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00",
        "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]}]"#;
    assert_eq!(parse(lo_only, "[]").unwrap(), None);
    let two = LINKS.replace(
        "\n]",
        r#",{"ifname":"eth1","mtu":1500,"link_type":"ether","address":"0a:58:0a:58:00:06",
        "addr_info":[{"family":"inet","local":"10.89.0.5","prefixlen":16}]}]"#,
    );
    assert!(parse(&two, ROUTES).unwrap_err().contains("two interfaces"));
    for bad in [
        LINKS.replace("0a:58:0a:58:00:05", "0a:58"),
        LINKS.replace("\"prefixlen\":16", "\"prefixlen\":33"),
        LINKS.replace("\"mtu\":1450", "\"mtu\":20"),
        "not json".to_string(),
    ] {
        assert!(parse(&bad, ROUTES).is_err(), "{bad}");
    }
    let bad_gateway = ROUTES.replace("10.88.0.1", "10.88.0");
    assert!(parse(LINKS, &bad_gateway).is_err());
}

/// A network namespace with a veth end `eth0` holding `10.88.0.5/16` and a default route,
/// removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("vsltest{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name.clone());
        let host_end = format!("vslh{}", std::process::id() % 100_000);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["link", "set", "eth0", "mtu", "1450", "up"]);
        inside(&["address", "add", "10.88.0.5/16", "dev", "eth0"]);
        inside(&["route", "add", "default", "via", "10.88.0.1", "dev", "eth0"]);
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_tap_and_both_redirects_come_and_go_in_a_real_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = Netns::new();
    let nic = discover(&ns.path()).unwrap().expect("the veth");
    assert_eq!((nic.name.as_str(), nic.prefix, nic.mtu), ("eth0", 16, 1450));
    assert_eq!(nic.gateway, Some(Ipv4Addr::new(10, 88, 0, 1)));
    connect(&ns.path(), &nic).unwrap();
    let filters = |dev: &str| {
        let args = ["filter", "show", "dev", dev, "parent", "ffff:"];
        run_in(&ns.path(), "tc", &args).unwrap_or_default()
    };
    assert!(
        filters("eth0").contains(&format!("Redirect to device {TAP}")),
        "{}",
        filters("eth0")
    );
    assert!(
        filters(TAP).contains("Redirect to device eth0"),
        "{}",
        filters(TAP)
    );
    let tap = run_in(&ns.path(), "ip", &["-json", "link", "show", TAP]).unwrap();
    assert!(tap.contains("\"mtu\":1450"), "{tap}");
    // A second connect fails (the tap is there) and takes everything away: one VM per
    // pod's namespace.
    assert!(connect(&ns.path(), &nic).is_err());
    disconnect(&ns.path(), &nic);
    assert!(run_in(&ns.path(), "ip", &["link", "show", TAP]).is_err());
    assert_eq!(filters("eth0"), "");
}
