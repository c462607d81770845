//! `--nic` option: `nat[,mac=52:54:00:12:34:56][,forward=tcp:127.0.0.1:2222-:22]...`
//! `[,host-loopback=on|off][,rate=10M][,rx-rate=…][,tx-rate=…]`, `natnet:NAME`,
//! `internal:NAME`, `hostonly:NAME`, `bridged:IFACE`, `tap:NAME`. Rates are bytes per
//! second (`virtio::rate_limiter::parse_byte_rate`); `rate=` limits both directions.

use std::net::Ipv4Addr;

use virtio::rate_limiter::{parse_byte_rate, Limits};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown network mode {0:?} (nat, natnet:NAME, internal:NAME, hostonly:NAME, bridged:IFACE, tap:NAME)")]
    UnknownMode(String),
    #[error("network mode {0} needs a name: {0}:NAME")]
    MissingName(&'static str),
    #[error("invalid name {0:?}: 1 to 15 characters of [A-Za-z0-9_.-]")]
    BadName(String),
    #[error("invalid MAC address {0:?}: six hex bytes separated by ':', unicast")]
    BadMac(String),
    #[error("invalid forward {0:?}: expected tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp:127.0.0.1:2222-:22 or tcp::2222-:22")]
    BadForward(String),
    #[error("forward= is only for nat and natnet:NAME modes")]
    ForwardNotNat,
    #[error("host-loopback= is only for nat and natnet:NAME modes")]
    HostLoopbackNotNat,
    #[error("invalid host-loopback value {0:?}: on or off")]
    BadHostLoopback(String),
    #[error(
        "unknown NIC option {0:?} (mac=, forward=, host-loopback=, rate=, rx-rate=, tx-rate=)"
    )]
    UnknownOption(String),
    #[error("{0}")]
    BadRate(#[from] virtio::rate_limiter::RateParseError),
}

/// How the NIC reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicMode {
    /// Rootless user-mode NAT for this VM alone.
    Nat,
    /// Several VMs behind one NAT.
    NatNetwork(String),
    /// A switch between VMs on the same name only.
    Internal(String),
    /// VMs and the host through a host bridge.
    HostOnly(String),
    /// A tap enslaved to an existing host bridge.
    Bridged(String),
    /// An existing or new tap device.
    Tap(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A host port forwarded into the guest (nat mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub protocol: Protocol,
    /// Host address to listen on (None: 127.0.0.1).
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    /// Guest address (None: the guest's DHCP address).
    pub guest_addr: Option<Ipv4Addr>,
    pub guest_port: u16,
}

/// A parsed `--nic` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    pub mode: NicMode,
    /// The guest's MAC (None: the VMM picks one, e.g. [`default_mac`]).
    pub mac: Option<[u8; 6]>,
    pub forwards: Vec<Forward>,
    /// Whether the guest reaches the host's loopback (127.0.0.1) through the gateway
    /// address (nat and natnet only; off by default: a hostile guest would otherwise reach
    /// every local service of the host).
    pub host_loopback: bool,
    /// Frames to the guest (`rx-rate=`; Firecracker's `rx_rate_limiter`).
    pub rx_limit: Limits,
    /// Frames from the guest (`tx-rate=`; Firecracker's `tx_rate_limiter`).
    pub tx_limit: Limits,
}

fn is_nat(mode: &NicMode) -> bool {
    matches!(mode, NicMode::Nat | NicMode::NatNetwork(_))
}

fn check_name(name: &str) -> Result<String, ConfigError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ConfigError::BadName(name.to_owned()))
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`; multicast addresses are refused.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || ConfigError::BadMac(s.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 {
        return Err(bad());
    }
    Ok(mac)
}

fn parse_endpoint(s: &str) -> Option<(Option<Ipv4Addr>, u16)> {
    let (addr, port) = s.rsplit_once(':')?;
    let addr = if addr.is_empty() {
        None
    } else {
        Some(addr.parse().ok()?)
    };
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((addr, port))
}

/// Parse `tcp:127.0.0.1:2222-:22` (also `udp:…`, `tcp::2222-:22`).
pub fn parse_forward(s: &str) -> Result<Forward, ConfigError> {
    let bad = || ConfigError::BadForward(s.to_owned());
    let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    let (host, guest) = rest.split_once('-').ok_or_else(bad)?;
    let (host_addr, host_port) = parse_endpoint(host).ok_or_else(bad)?;
    let (guest_addr, guest_port) = parse_endpoint(guest).ok_or_else(bad)?;
    Ok(Forward {
        protocol,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    })
}

impl Forward {
    /// The host address the forward listens on: the one given, else 127.0.0.1.
    pub fn listen_addr(&self) -> Ipv4Addr {
        self.host_addr.unwrap_or(Ipv4Addr::LOCALHOST)
    }
}

/// The canonical spelling, which [`parse_forward`] reads back: `tcp:127.0.0.1:2222-:22`.
impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let guest = self.guest_addr.map(|a| a.to_string()).unwrap_or_default();
        write!(
            f,
            "{proto}:{}:{}-{guest}:{}",
            self.listen_addr(),
            self.host_port,
            self.guest_port
        )
    }
}

/// Parse a NIC mode: `nat`, `natnet:NAME`, `internal:NAME`, `hostonly:NAME`,
/// `bridged:IFACE` or `tap:NAME` (names as [`NicConfig::validate`] allows them).
pub fn parse_nic_mode(s: &str) -> Result<NicMode, ConfigError> {
    let (kind, name) = match s.split_once(':') {
        Some((k, n)) => (k, Some(n)),
        None => (s, None),
    };
    let named = |label: &'static str| -> Result<String, ConfigError> {
        check_name(name.ok_or(ConfigError::MissingName(label))?)
    };
    Ok(match kind {
        "nat" if name.is_none() => NicMode::Nat,
        "natnet" => NicMode::NatNetwork(named("natnet")?),
        "internal" => NicMode::Internal(named("internal")?),
        "hostonly" => NicMode::HostOnly(named("hostonly")?),
        "bridged" => NicMode::Bridged(named("bridged")?),
        "tap" => NicMode::Tap(named("tap")?),
        _ => return Err(ConfigError::UnknownMode(s.to_owned())),
    })
}

/// Parse one `--nic` value.
pub fn parse_nic(s: &str) -> Result<NicConfig, ConfigError> {
    let mut items = s.split(',');
    let mut config = NicConfig::new(parse_nic_mode(items.next().unwrap_or_default())?);
    for item in items {
        if let Some(mac) = item.strip_prefix("mac=") {
            config.mac = Some(parse_mac(mac)?);
        } else if let Some(fwd) = item.strip_prefix("forward=") {
            if !is_nat(&config.mode) {
                return Err(ConfigError::ForwardNotNat);
            }
            config.forwards.push(parse_forward(fwd)?);
        } else if let Some(value) = item.strip_prefix("host-loopback=") {
            if !is_nat(&config.mode) {
                return Err(ConfigError::HostLoopbackNotNat);
            }
            config.host_loopback = match value {
                "on" => true,
                "off" => false,
                _ => return Err(ConfigError::BadHostLoopback(value.to_owned())),
            };
        } else if let Some(rate) = item.strip_prefix("rate=") {
            let bucket = Some(parse_byte_rate(rate)?);
            config.rx_limit.bandwidth = bucket;
            config.tx_limit.bandwidth = bucket;
        } else if let Some(rate) = item.strip_prefix("rx-rate=") {
            config.rx_limit.bandwidth = Some(parse_byte_rate(rate)?);
        } else if let Some(rate) = item.strip_prefix("tx-rate=") {
            config.tx_limit.bandwidth = Some(parse_byte_rate(rate)?);
        } else {
            return Err(ConfigError::UnknownOption(item.to_owned()));
        }
    }
    Ok(config)
}

impl NicConfig {
    /// A NIC in `mode` with no MAC chosen, no forwards, no host loopback, no limits.
    pub fn new(mode: NicMode) -> Self {
        Self {
            mode,
            mac: None,
            forwards: Vec::new(),
            host_loopback: false,
            rx_limit: Limits::default(),
            tx_limit: Limits::default(),
        }
    }

    /// Checks a configuration that was not made by [`parse_nic`] (a snapshot file's, which
    /// is untrusted) by the same rules: names, a unicast MAC, non-zero forward ports, and
    /// forwards and host-loopback only in the NAT modes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.mode {
            NicMode::Nat => {}
            NicMode::NatNetwork(n)
            | NicMode::Internal(n)
            | NicMode::HostOnly(n)
            | NicMode::Bridged(n)
            | NicMode::Tap(n) => {
                check_name(n)?;
            }
        }
        if let Some(mac) = self.mac {
            if mac[0] & 1 != 0 {
                let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                return Err(ConfigError::BadMac(hex.join(":")));
            }
        }
        if !is_nat(&self.mode) {
            if !self.forwards.is_empty() {
                return Err(ConfigError::ForwardNotNat);
            }
            if self.host_loopback {
                return Err(ConfigError::HostLoopbackNotNat);
            }
        }
        if let Some(f) = self
            .forwards
            .iter()
            .find(|f| f.host_port == 0 || f.guest_port == 0)
        {
            return Err(ConfigError::BadForward(format!(
                "port 0 in {}-{}",
                f.host_port, f.guest_port
            )));
        }
        Ok(())
    }
}

/// A locally administered MAC in QEMU's 52:54:00 range, distinct per `index` and
/// random otherwise.
pub fn default_mac(index: u8) -> [u8; 6] {
    let mut r = [0u8; 2];
    // SAFETY: `r` is a valid, writable buffer of 2 bytes for the call.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if n != 2 {
        r = [0x12, 0x34];
    }
    [0x52, 0x54, 0x00, r[0], r[1], index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_with_options() {
        let c = parse_nic("nat,mac=52:54:00:ab:cd:ef,forward=tcp:127.0.0.1:2222-:22,forward=udp::5353-10.0.2.15:53").unwrap();
        assert_eq!(c.mode, NicMode::Nat);
        assert_eq!(c.mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!(
            c.forwards,
            vec![
                Forward {
                    protocol: Protocol::Tcp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 2222,
                    guest_addr: None,
                    guest_port: 22
                },
                Forward {
                    protocol: Protocol::Udp,
                    host_addr: None,
                    host_port: 5353,
                    guest_addr: Some(Ipv4Addr::new(10, 0, 2, 15)),
                    guest_port: 53
                }
            ]
        );
    }

    #[test]
    fn validate_applies_the_parser_rules() {
        for ok in [
            "nat,forward=tcp::2222-:22,host-loopback=on",
            "internal:lab",
            "tap:tap0",
        ] {
            parse_nic(ok).unwrap().validate().unwrap();
        }
        let mut c = parse_nic("internal:lab").unwrap();
        c.mode = NicMode::Internal("../etc".into());
        assert_eq!(c.validate(), Err(ConfigError::BadName("../etc".into())));
        let mut c = parse_nic("tap:tap0").unwrap();
        c.host_loopback = true;
        assert_eq!(c.validate(), Err(ConfigError::HostLoopbackNotNat));
        let mut c = parse_nic("nat").unwrap();
        c.mac = Some([1, 0, 0, 0, 0, 0]);
        assert!(matches!(c.validate(), Err(ConfigError::BadMac(_))));
        let mut c = parse_nic("nat,forward=tcp::2222-:22").unwrap();
        c.forwards[0].guest_port = 0;
        assert!(matches!(c.validate(), Err(ConfigError::BadForward(_))));
    }

    #[test]
    fn named_modes() {
        for (s, m) in [
            ("natnet:lab", NicMode::NatNetwork("lab".into())),
            ("internal:intnet", NicMode::Internal("intnet".into())),
            ("hostonly:vh0", NicMode::HostOnly("vh0".into())),
            ("bridged:br0", NicMode::Bridged("br0".into())),
            ("tap:tap0", NicMode::Tap("tap0".into())),
        ] {
            assert_eq!(parse_nic(s).unwrap().mode, m);
        }
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(
            parse_nic("internal"),
            Err(ConfigError::MissingName("internal"))
        );
        assert!(matches!(
            parse_nic("internal:../x"),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            parse_nic("tap:a-very-long-interface-name"),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            parse_nic("slirp"),
            Err(ConfigError::UnknownMode(_))
        ));
        assert!(matches!(
            parse_nic("nat:x"),
            Err(ConfigError::UnknownMode(_))
        ));
        assert!(matches!(
            parse_nic("nat,mac=01:00:00:00:00:01"),
            Err(ConfigError::BadMac(_))
        ));
        assert!(matches!(
            parse_nic("nat,mac=52:54:00:00:00"),
            Err(ConfigError::BadMac(_))
        ));
        assert!(matches!(
            parse_nic("nat,forward=tcp:2222-22"),
            Err(ConfigError::BadForward(_))
        ));
        assert!(matches!(
            parse_nic("nat,forward=sctp::1-:2"),
            Err(ConfigError::BadForward(_))
        ));
        assert!(matches!(
            parse_nic("nat,forward=tcp::0-:22"),
            Err(ConfigError::BadForward(_))
        ));
        assert_eq!(
            parse_nic("tap:t0,forward=tcp::1-:2"),
            Err(ConfigError::ForwardNotNat)
        );
        assert!(matches!(
            parse_nic("nat,speed=10"),
            Err(ConfigError::UnknownOption(_))
        ));
    }

    #[test]
    fn host_loopback_is_an_opt_in_for_nat_modes() {
        assert!(!parse_nic("nat").unwrap().host_loopback);
        assert!(!parse_nic("natnet:lab").unwrap().host_loopback);
        assert!(parse_nic("nat,host-loopback=on").unwrap().host_loopback);
        assert!(
            parse_nic("natnet:lab,host-loopback=on")
                .unwrap()
                .host_loopback
        );
        assert!(!parse_nic("nat,host-loopback=off").unwrap().host_loopback);
        assert_eq!(
            parse_nic("nat,host-loopback=yes"),
            Err(ConfigError::BadHostLoopback("yes".into()))
        );
        for mode in ["internal:i", "hostonly:h", "bridged:br0", "tap:t0"] {
            assert_eq!(
                parse_nic(&format!("{mode},host-loopback=on")),
                Err(ConfigError::HostLoopbackNotNat),
                "{mode}"
            );
        }
    }

    #[test]
    fn rates_limit_one_or_both_directions() {
        use virtio::rate_limiter::bucket_rate_per_second;
        let rate = |l: Limits| l.bandwidth.map(|b| bucket_rate_per_second(&b));
        let both = parse_nic("nat,rate=50M").unwrap();
        assert_eq!(rate(both.rx_limit), Some(50 << 20));
        assert_eq!(rate(both.tx_limit), Some(50 << 20));
        let tx = parse_nic("tap:t0,tx-rate=10M").unwrap();
        assert_eq!(
            (rate(tx.rx_limit), rate(tx.tx_limit)),
            (None, Some(10 << 20))
        );
        assert!(!parse_nic("nat").unwrap().rx_limit.limits());
        assert!(matches!(
            parse_nic("nat,rx-rate=fast"),
            Err(ConfigError::BadRate(_))
        ));
    }

    #[test]
    fn forwards_print_in_the_form_they_parse_from() {
        for (text, canonical) in [
            ("tcp::2222-:22", "tcp:127.0.0.1:2222-:22"),
            ("udp:0.0.0.0:53-10.0.2.15:53", "udp:0.0.0.0:53-10.0.2.15:53"),
            ("tcp::80-10.0.2.15:80", "tcp:127.0.0.1:80-10.0.2.15:80"),
        ] {
            let f = parse_forward(text).unwrap();
            assert_eq!(f.to_string(), canonical);
            assert_eq!(
                parse_forward(canonical).unwrap().listen_addr(),
                f.listen_addr()
            );
        }
        // The host address is written with its colon, as QEMU's hostfwd does.
        assert!(matches!(
            parse_forward("tcp:2222-:22"),
            Err(ConfigError::BadForward(_))
        ));
    }

    #[test]
    fn default_macs_are_unicast_and_local() {
        let m = default_mac(3);
        assert_eq!(&m[..3], &[0x52, 0x54, 0]);
        assert_eq!(m[5], 3);
        assert!(parse_mac("52:54:00:00:00:01").is_ok());
    }
}
