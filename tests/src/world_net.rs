//! The social world's plumbing: each namespace's `/etc/netns` files, the NAT routers, the
//! bridge ports that join namespaces, and the iptables chain that counts login attempts.

use crate::netns::Namespace;
use crate::social_world::{DOMAIN, INET_GW, PREFIX, SERVER_IP};
use crate::world_files::{check, write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `/etc/netns/<ns>/` with a `hosts` (svpn.test → 198.18.0.1) and a `resolv.conf` pointing at
/// the namespace's own loopback, so that stray DNS look-ups fail at once. Removed on drop.
pub(crate) struct EtcNetns(PathBuf);

impl EtcNetns {
    pub(crate) fn new(ns: &Namespace) -> EtcNetns {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let guard = EtcNetns(dir);
        write(
            &guard.0.join("hosts"),
            &format!("127.0.0.1 localhost\n::1 localhost\n{SERVER_IP} {DOMAIN}\n"),
        );
        write(&guard.0.join("resolv.conf"), "nameserver 127.0.0.1\n");
        guard
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A namespace of the world and its `/etc/netns` directory.
pub(crate) struct Node {
    pub(crate) ns: Namespace,
    _etc: EtcNetns,
}

impl Node {
    pub(crate) fn new(tag: &str, role: &str) -> Node {
        let ns = Namespace::new(&format!("{tag}-{role}"));
        let etc = EtcNetns::new(&ns);
        Node { ns, _etc: etc }
    }
}

/// A NAT router: WAN leg on the internet's bridge, a LAN bridge of its own, forwarding on,
/// MASQUERADE (with `--random-fully` for the symmetric one), new inbound flows dropped.
pub(crate) fn nat_router(
    inet: &Namespace,
    inet_port: &str,
    r: &Namespace,
    wan: Ipv4Addr,
    lan: Ipv4Addr,
    symmetric: bool,
) {
    bridge_port(inet, "br0", inet_port, r, "wan");
    r.ip(&["addr", "add", &format!("{wan}/{PREFIX}"), "dev", "wan"]);
    r.ip(&["route", "add", "default", "via", &INET_GW.to_string()]);
    r.ip(&["link", "add", "lan0", "type", "bridge"]);
    r.ip(&["addr", "add", &format!("{lan}/{PREFIX}"), "dev", "lan0"]);
    r.ip(&["link", "set", "lan0", "up"]);
    check(
        r.output("sysctl", &["-qw", "net.ipv4.ip_forward=1"]),
        "sysctl",
    );
    let mut masq = vec![
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "wan",
        "-j",
        "MASQUERADE",
    ];
    if symmetric {
        masq.push("--random-fully");
    }
    check(r.output("iptables", &masq), "iptables MASQUERADE");
    check(
        r.output(
            "iptables",
            &[
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "!",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "DROP",
            ],
        ),
        "iptables FORWARD",
    );
}

/// A veth created inside `up` (its end `up_if` enslaved to `bridge` there) with its peer
/// `down_if` placed straight into `down`; both ends up.
pub(crate) fn bridge_port(
    up: &Namespace,
    bridge: &str,
    up_if: &str,
    down: &Namespace,
    down_if: &str,
) {
    up.ip(&[
        "link",
        "add",
        up_if,
        "type",
        "veth",
        "peer",
        "name",
        down_if,
        "netns",
        down.name(),
    ]);
    up.ip(&["link", "set", up_if, "master", bridge]);
    up.ip(&["link", "set", up_if, "up"]);
    down.ip(&["link", "set", down_if, "up"]);
}

/// The iptables chain in the internet namespace that counts connection attempts (TCP SYNs)
/// to the XMPP port, one rule per source address.
const C2S_COUNTER: &str = "SVPN_C2S";

/// A chain that counts TCP SYNs to the XMPP `port` per source address.
pub(crate) fn count_c2s_attempts(
    inet: &Namespace,
    port: u16,
    sources: impl IntoIterator<Item = Ipv4Addr>,
) {
    let port = port.to_string();
    let mut rules: Vec<Vec<String>> = vec![
        vec!["-N".into(), C2S_COUNTER.into()],
        vec![
            "-A".into(),
            "INPUT".into(),
            "-p".into(),
            "tcp".into(),
            "--dport".into(),
            port,
            "--syn".into(),
            "-j".into(),
            C2S_COUNTER.into(),
        ],
    ];
    for source in sources {
        rules.push(vec![
            "-A".into(),
            C2S_COUNTER.into(),
            "-s".into(),
            source.to_string(),
        ]);
    }
    for rule in rules {
        let mut args = vec!["-w"];
        args.extend(rule.iter().map(String::as_str));
        check(inet.output("iptables", &args), "iptables counter");
    }
}

/// TCP connection attempts to the XMPP port from `source` the counter saw so far.
pub(crate) fn c2s_attempts(inet: &Namespace, source: Ipv4Addr) -> u64 {
    let out = inet.output("iptables", &["-w", "-L", C2S_COUNTER, "-v", "-x", "-n"]);
    check(out.clone(), "iptables -L");
    let text = String::from_utf8_lossy(&out.stdout);
    let source = source.to_string();
    text.lines()
        .filter(|l| l.split_whitespace().any(|field| field == source))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
