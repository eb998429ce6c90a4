//! The social test world of DESIGN.md §8: an "internet" namespace running prosody (XMPP) and
//! coturn (STUN/TURN), two NAT routers (endpoint-independent and symmetric) and five hosts.
//!
//! ```text
//!                       inet (bridge br0 198.18.0.0/24)
//!   prosody 198.18.0.1:5222   coturn 198.18.0.1:3478 (+198.18.0.2 for RFC 5780)
//!   default route: a black hole (veth bh0 → fake neighbour 198.18.255.2)
//!      |                    |                     |               |
//!   cone 198.18.0.10     sym 198.18.0.11      carol .20        dave .21
//!   MASQUERADE           MASQUERADE --random-fully
//!   lan0 198.19.1.1/24   lan0 198.19.2.1/24
//!    |          |          |
//!  alice .2  alice2 .3   bob .2
//! ```
//!
//! Every veth is created inside a namespace with its peer placed straight into another, and
//! every bridge inside the namespace that owns it: the host namespace has no interface and no
//! route into the world. Processes are killed by PID and namespaces deleted on drop, also when
//! a test panics (including halfway through [`SocialWorld::new`]).

use crate::netns::{require_root, ChildGuard, Namespace};
use crate::two_hosts::StateDir;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The XMPP domain (prosody's VirtualHost) and TURN realm.
pub const DOMAIN: &str = "svpn.test";
/// The server address of the world: prosody, coturn's primary listening and relay address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// coturn's second listening address (RFC 5780 alternate address).
pub const SERVER_ALT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// prosody's client-to-server port (STARTTLS required).
pub const XMPP_ADDR: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 5222);
/// coturn: STUN and TURN over UDP.
pub const TURN_ADDR: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 3478);
pub const STUN_ADDR: SocketAddrV4 = TURN_ADDR;
pub const TURN_USER: &str = "svpn";
pub const TURN_PASSWORD: &str = "turnpass";
/// coturn's relay ports (inclusive).
pub const TURN_RELAY_PORTS: (u16, u16) = (49152, 49251);
/// WAN addresses of the two NAT routers.
pub const CONE_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const SYM_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// The hosts, in the order they are built.
pub const HOSTS: [&str; 5] = ["alice", "alice2", "bob", "carol", "dave"];

/// Where a host is attached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Site {
    Cone,
    Sym,
    Inet,
}

const HOST_PLAN: [(&str, Site, Ipv4Addr); 5] = [
    ("alice", Site::Cone, Ipv4Addr::new(198, 19, 1, 2)),
    ("alice2", Site::Cone, Ipv4Addr::new(198, 19, 1, 3)),
    ("bob", Site::Sym, Ipv4Addr::new(198, 19, 2, 2)),
    ("carol", Site::Inet, Ipv4Addr::new(198, 18, 0, 20)),
    ("dave", Site::Inet, Ipv4Addr::new(198, 18, 0, 21)),
];

const INET_GW: Ipv4Addr = SERVER_IP;
const CONE_LAN: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const SYM_LAN: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 1);
const PREFIX: u8 = 24;
/// The black hole behind the internet's default route: a neighbour that never answers.
const BLACKHOLE_LOCAL: &str = "198.18.255.1/30";
const BLACKHOLE_GW: &str = "198.18.255.2";
const BLACKHOLE_MAC: &str = "02:53:56:50:4e:01";
/// The host-side interface of every host.
pub const HOST_IF: &str = "eth0";

const PROSODY_READY: Duration = Duration::from_secs(15);
const COTURN_READY: Duration = Duration::from_secs(10);

static WORLDS: AtomicU32 = AtomicU32::new(0);

/// `/etc/netns/<ns>/` with a `hosts` (svpn.test → 198.18.0.1) and a `resolv.conf` pointing at
/// the namespace's own loopback, so that stray DNS look-ups fail at once. Removed on drop.
struct EtcNetns(PathBuf);

impl EtcNetns {
    fn new(ns: &Namespace) -> EtcNetns {
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
struct Node {
    ns: Namespace,
    _etc: EtcNetns,
}

impl Node {
    fn new(tag: &str, role: &str) -> Node {
        let ns = Namespace::new(&format!("{tag}-{role}"));
        let etc = EtcNetns::new(&ns);
        Node { ns, _etc: etc }
    }
}

struct Host {
    name: &'static str,
    node: Node,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
}

/// The world. Field order is drop order: processes, then hosts, routers and the internet,
/// then the state directory.
pub struct SocialWorld {
    prosody: Option<ChildGuard>,
    coturn: ChildGuard,
    hosts: Vec<Host>,
    cone: Node,
    sym: Node,
    inet: Node,
    state: StateDir,
}

impl SocialWorld {
    /// Builds the whole world and returns once prosody and coturn answer. Panics (tearing
    /// down whatever was already built) on any failure.
    pub fn new(tag: &str) -> SocialWorld {
        require_root();
        // Created atomically under an unpredictable name (the demo runs as root in /tmp),
        // then opened up for the prosody user.
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "svpn-world-{tag}-{}-{}-",
                std::process::id(),
                WORLDS.fetch_add(1, Ordering::Relaxed)
            ))
            .tempdir()
            .expect("world state directory")
            .keep();
        let state = StateDir(dir);
        mkdir(&state.0, 0o755);

        // The internet: a bridge holding the server addresses, a black-hole default route.
        let inet = Node::new(tag, "inet");
        let i = &inet.ns;
        i.ip(&["link", "add", "br0", "type", "bridge"]);
        i.ip(&[
            "addr",
            "add",
            &format!("{SERVER_IP}/{PREFIX}"),
            "dev",
            "br0",
        ]);
        i.ip(&[
            "addr",
            "add",
            &format!("{SERVER_ALT_IP}/{PREFIX}"),
            "dev",
            "br0",
        ]);
        i.ip(&["link", "set", "br0", "up"]);
        i.ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
        i.ip(&["addr", "add", BLACKHOLE_LOCAL, "dev", "bh0"]);
        i.ip(&["link", "set", "bh0", "up"]);
        i.ip(&["link", "set", "bh1", "up"]);
        i.ip(&[
            "neigh",
            "add",
            BLACKHOLE_GW,
            "lladdr",
            BLACKHOLE_MAC,
            "dev",
            "bh0",
            "nud",
            "permanent",
        ]);
        i.ip(&["route", "add", "default", "via", BLACKHOLE_GW, "dev", "bh0"]);

        // The two NAT routers.
        let cone = Node::new(tag, "cone");
        nat_router(&inet.ns, "p-cone", &cone.ns, CONE_WAN, CONE_LAN, false);
        let sym = Node::new(tag, "sym");
        nat_router(&inet.ns, "p-sym", &sym.ns, SYM_WAN, SYM_LAN, true);

        // The hosts.
        let mut hosts = Vec::new();
        for (name, site, addr) in HOST_PLAN {
            let node = Node::new(tag, name);
            let (upstream, gateway) = match site {
                Site::Cone => (&cone.ns, CONE_LAN),
                Site::Sym => (&sym.ns, SYM_LAN),
                Site::Inet => (&inet.ns, INET_GW),
            };
            let bridge = if site == Site::Inet { "br0" } else { "lan0" };
            let port = format!("h-{name}");
            bridge_port(upstream, bridge, &port, &node.ns, HOST_IF);
            node.ns
                .ip(&["addr", "add", &format!("{addr}/{PREFIX}"), "dev", HOST_IF]);
            node.ns
                .ip(&["route", "add", "default", "via", &gateway.to_string()]);
            hosts.push(Host {
                name,
                node,
                addr,
                gateway,
            });
        }

        make_certificates(&state.0);
        write_prosody_config(&state.0);
        mkdir(&state.0.join("turn"), 0o755);

        // Both servers start at once; then wait for each.
        let mut coturn = spawn_coturn(&inet.ns, &state.0);
        let mut prosody = spawn_prosody(&inet.ns, &state.0);
        wait_coturn(&inet.ns, &mut coturn, &state.0);
        wait_prosody(&inet.ns, &mut prosody, &state.0);

        SocialWorld {
            prosody: Some(prosody),
            coturn,
            hosts,
            cone,
            sym,
            inet,
            state,
        }
    }

    /// A host's namespace: one of [`HOSTS`]. Panics on an unknown name.
    pub fn host(&self, name: &str) -> &Namespace {
        &self.host_entry(name).node.ns
    }

    /// A host's current address (changed by [`SocialWorld::move_host`]).
    pub fn host_addr(&self, name: &str) -> Ipv4Addr {
        self.host_entry(name).addr
    }

    /// A host's default gateway: its NAT router's LAN address, or 198.18.0.1 on the internet.
    pub fn host_gateway(&self, name: &str) -> Ipv4Addr {
        self.host_entry(name).gateway
    }

    /// The internet namespace (prosody, coturn).
    pub fn inet(&self) -> &Namespace {
        &self.inet.ns
    }

    /// A NAT router's namespace: "cone" or "sym".
    pub fn router(&self, name: &str) -> &Namespace {
        match name {
            "cone" => &self.cone.ns,
            "sym" => &self.sym.ns,
            _ => panic!("no router {name:?} (cone, sym)"),
        }
    }

    /// The names of all the world's namespaces.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![
            self.inet.ns.name().to_string(),
            self.cone.ns.name().to_string(),
            self.sym.ns.name().to_string(),
        ];
        names.extend(self.hosts.iter().map(|h| h.node.ns.name().to_string()));
        names
    }

    pub fn state_dir(&self) -> &Path {
        &self.state.0
    }

    /// The throwaway CA that signed prosody's certificate: clients trust only this.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.state.0.join("ca").join("ca.crt")
    }

    pub fn xmpp_addr(&self) -> SocketAddr {
        SocketAddr::V4(XMPP_ADDR)
    }

    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    pub fn stun_addr(&self) -> SocketAddr {
        SocketAddr::V4(STUN_ADDR)
    }

    pub fn turn_addr(&self) -> SocketAddr {
        SocketAddr::V4(TURN_ADDR)
    }

    /// (username, password) for coturn's long-term credentials; the realm is [`DOMAIN`].
    pub fn turn_credentials(&self) -> (&'static str, &'static str) {
        (TURN_USER, TURN_PASSWORD)
    }

    pub fn prosody_log_path(&self) -> PathBuf {
        self.state.0.join("prosody").join("log").join("prosody.log")
    }

    pub fn coturn_log_path(&self) -> PathBuf {
        self.state.0.join("turn").join("turnserver.log")
    }

    /// prosody's PID while it runs.
    pub fn prosody_pid(&mut self) -> Option<u32> {
        let p = self.prosody.as_mut()?;
        match p.0.try_wait() {
            Ok(None) => Some(p.pid()),
            _ => None,
        }
    }

    pub fn coturn_pid(&self) -> u32 {
        self.coturn.pid()
    }

    /// Creates an XMPP account `user@svpn.test` (prosodyctl, works whether or not prosody runs).
    pub fn register(&self, user: &str, password: &str) {
        let cfg = prosody_config_path(&self.state.0);
        let cfg = cfg.to_str().unwrap();
        let out = self.inet.ns.output(
            "timeout",
            &[
                "20",
                "prosodyctl",
                "--config",
                cfg,
                "register",
                user,
                DOMAIN,
                password,
            ],
        );
        assert!(
            out.status.success(),
            "prosodyctl register {user}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops prosody (SIGTERM, so clients see their streams closed; SIGKILL after 3 s).
    /// Accounts and other data stay for [`SocialWorld::start_prosody`].
    pub fn stop_prosody(&mut self) {
        if let Some(mut p) = self.prosody.take() {
            if let Ok(None) = p.0.try_wait() {
                // SAFETY: signalling our own unreaped child by its PID.
                unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = p.0.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            p.kill();
        }
    }

    /// Kills prosody at once (SIGKILL), as a crash would.
    pub fn kill_prosody(&mut self) {
        if let Some(mut p) = self.prosody.take() {
            p.kill();
        }
    }

    /// Starts prosody again with the same configuration and data and waits until it accepts
    /// connections. Does nothing while it runs.
    pub fn start_prosody(&mut self) {
        if self.prosody_pid().is_some() {
            return;
        }
        self.prosody = None;
        let mut p = spawn_prosody(&self.inet.ns, &self.state.0);
        wait_prosody(&self.inet.ns, &mut p, &self.state.0);
        self.prosody = Some(p);
    }

    /// Gives a host a new address in the same subnet (e.g. alice 198.19.1.2 → 198.19.1.9), as
    /// when a device roams on its LAN; its default route is put back.
    pub fn move_host(&mut self, name: &str, new_addr: Ipv4Addr) {
        let taken = self
            .hosts
            .iter()
            .any(|o| o.name != name && (o.addr == new_addr || o.gateway == new_addr));
        assert!(!taken, "{new_addr} belongs to another machine");
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?}"));
        let mask = u32::MAX << (32 - PREFIX);
        assert_eq!(
            u32::from(new_addr) & mask,
            u32::from(h.addr) & mask,
            "{new_addr} is not on {name}'s subnet {}/{PREFIX}",
            h.addr
        );
        let special = [h.gateway, SERVER_IP, SERVER_ALT_IP, CONE_WAN, SYM_WAN];
        assert!(!special.contains(&new_addr), "{new_addr} is taken");
        let host_part = u32::from(new_addr) & !mask;
        assert!(
            host_part != 0 && host_part != !mask,
            "{new_addr} is not a host address"
        );
        let ns = &h.node.ns;
        ns.ip(&[
            "addr",
            "del",
            &format!("{}/{PREFIX}", h.addr),
            "dev",
            HOST_IF,
        ]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{new_addr}/{PREFIX}"),
            "dev",
            HOST_IF,
        ]);
        ns.ip(&["route", "replace", "default", "via", &h.gateway.to_string()]);
        h.addr = new_addr;
    }

    fn host_entry(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} (one of {HOSTS:?})"))
    }
}

/// A NAT router: WAN leg on the internet's bridge, a LAN bridge of its own, forwarding on,
/// MASQUERADE (with `--random-fully` for the symmetric one), new inbound flows dropped.
fn nat_router(
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
fn bridge_port(up: &Namespace, bridge: &str, up_if: &str, down: &Namespace, down_if: &str) {
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

fn make_certificates(state: &Path) {
    let ca = state.join("ca");
    mkdir(&ca, 0o755);
    let certs = state.join("prosody").join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&ca.join("ca.key")),
        "-out",
        &p(&ca.join("ca.crt")),
        "-days",
        "7",
        "-subj",
        "/CN=SocialVPN test world CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let key = certs.join(format!("{DOMAIN}.key"));
    let csr = ca.join(format!("{DOMAIN}.csr"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        &format!("/CN={DOMAIN}"),
    ]);
    let ext = ca.join("server.ext");
    write(
        &ext,
        &format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}\n"
        ),
    );
    let serial = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            & 0xffff_ffff_ffff
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca.join("ca.crt")),
        "-CAkey",
        &p(&ca.join("ca.key")),
        "-set_serial",
        &serial,
        "-days",
        "7",
        "-out",
        &p(&certs.join(format!("{DOMAIN}.crt"))),
        "-extfile",
        &p(&ext),
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn prosody_config_path(state: &Path) -> PathBuf {
    state.join("prosody").join("prosody.cfg.lua")
}

/// prosody's own config, data and log directories, `certs/` next to the config, all owned by
/// the `prosody` user.
fn write_prosody_config(state: &Path) {
    let dir = state.join("prosody");
    let data = dir.join("data");
    let log = dir.join("log");
    let certs = dir.join("certs");
    for d in [&data, &log] {
        std::fs::create_dir_all(d).unwrap();
    }
    let cfg = format!(
        r#"-- SocialVPN test world (generated)
prosody_user = "prosody"
prosody_group = "prosody"
data_path = "{data}"
plugin_paths = {{ }}
interfaces = {{ "{ip}" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "private"; "blocklist";
  "ping"; "smacks"; "posix";
}}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = true
s2s_require_encryption = true
allow_unencrypted_plain_auth = false
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
log = {{ info = "{log}/prosody.log"; error = "{log}/prosody.err" }}
certificates = "certs"
ssl = {{ certificate = "{certs}/{DOMAIN}.crt"; key = "{certs}/{DOMAIN}.key" }}

VirtualHost "{DOMAIN}"
"#,
        data = data.display(),
        ip = XMPP_ADDR.ip(),
        port = XMPP_ADDR.port(),
        log = log.display(),
        certs = certs.display(),
    );
    write(&prosody_config_path(state), &cfg);
    let out = Command::new("chown")
        .args(["-R", "prosody:prosody"])
        .arg(&dir)
        .output()
        .expect("cannot run chown");
    assert!(
        out.status.success(),
        "chown prosody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// prosody in the foreground as user `prosody`: the PID held is the server itself
/// (`ip netns exec` and `setpriv` both exec).
fn spawn_prosody(inet: &Namespace, state: &Path) -> ChildGuard {
    let out = log_file(&state.join("prosody").join("log").join("stdout.log"));
    let cfg = prosody_config_path(state);
    let child = inet
        .command("setpriv")
        .args([
            "--reuid",
            "prosody",
            "--regid",
            "prosody",
            "--init-groups",
            "prosody",
            "--config",
        ])
        .arg(&cfg)
        .arg("-F")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("cannot start prosody");
    ChildGuard(child)
}

fn wait_prosody(inet: &Namespace, p: &mut ChildGuard, state: &Path) {
    let logs = [
        state.join("prosody").join("log").join("stdout.log"),
        state.join("prosody").join("log").join("prosody.log"),
    ];
    wait_ready("prosody", p, &logs, PROSODY_READY, || {
        wait_port(inet, SocketAddr::V4(XMPP_ADDR), Duration::from_millis(200))
    });
}

fn spawn_coturn(inet: &Namespace, state: &Path) -> ChildGuard {
    let dir = state.join("turn");
    let out = log_file(&dir.join("stdout.log"));
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let user = format!("{TURN_USER}:{TURN_PASSWORD}");
    let (min, max) = (
        TURN_RELAY_PORTS.0.to_string(),
        TURN_RELAY_PORTS.1.to_string(),
    );
    let child = inet
        .command("turnserver")
        .args([
            "-n",
            "--db",
            &p("turndb"),
            "--pidfile",
            &p("turnserver.pid"),
            "--log-file",
            &p("turnserver.log"),
            "--simple-log",
            "--listening-ip",
            &SERVER_IP.to_string(),
            "--listening-ip",
            &SERVER_ALT_IP.to_string(),
            "--relay-ip",
            &SERVER_IP.to_string(),
            "--listening-port",
            &TURN_ADDR.port().to_string(),
            "--min-port",
            &min,
            "--max-port",
            &max,
            "--lt-cred-mech",
            "--user",
            &user,
            "--realm",
            DOMAIN,
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("cannot start turnserver");
    ChildGuard(child)
}

fn wait_coturn(inet: &Namespace, c: &mut ChildGuard, state: &Path) {
    let logs = [
        state.join("turn").join("stdout.log"),
        state.join("turn").join("turnserver.log"),
    ];
    wait_ready("coturn", c, &logs, COTURN_READY, || {
        stun_binding(inet, SocketAddr::V4(STUN_ADDR), Duration::from_millis(200)).is_some()
    });
}

/// Polls `probe` until it succeeds; panics with the logs if the process exits first or the
/// time runs out.
fn wait_ready(
    what: &str,
    child: &mut ChildGuard,
    logs: &[PathBuf],
    limit: Duration,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return;
        }
        let exited = child.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let mut text = String::new();
            for l in logs {
                let s = std::fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = s.lines().rev().take(40).collect();
                text.push_str(&format!("--- {}\n", l.display()));
                for line in tail.iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            match exited {
                Some(status) => panic!("{what} exited ({status}) before it was ready\n{text}"),
                None => panic!("{what} not ready after {limit:?}\n{text}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when a TCP connection to `addr` from inside `ns` succeeds within `timeout`.
pub fn wait_port(ns: &Namespace, addr: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
        .join()
        .unwrap_or(false)
}

/// One STUN Binding request from a fresh UDP socket inside `ns`; the mapped address the
/// server saw, or None if no answer came within `timeout`.
pub fn stun_binding(ns: &Namespace, server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
        stun_mapped(&sock, server, timeout)
    })
    .join()
    .ok()
    .flatten()
}

/// Sends a STUN Binding request from `sock` to `server` (retransmitting every 100 ms) and
/// returns the (XOR-)MAPPED-ADDRESS of the answer, or None after `timeout`.
pub fn stun_mapped(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    static REQUESTS: AtomicU32 = AtomicU32::new(0);
    let mut txid = [0u8; 12];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos()
        ^ (u128::from(std::process::id()) << 64)
        ^ (u128::from(REQUESTS.fetch_add(1, Ordering::Relaxed)) << 32);
    txid.copy_from_slice(&seed.to_be_bytes()[4..16]);
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&txid);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&req, server).ok()?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).ok()?;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == server && n >= 20 && buf[..2] == [0x01, 0x01] && buf[8..20] == txid {
                return parse_mapped(&buf[..n]);
            }
        }
    }
    None
}

fn parse_mapped(msg: &[u8]) -> Option<SocketAddr> {
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let body = msg.get(20..20 + len)?;
    let mut plain = None;
    let mut i = 0;
    while i + 4 <= body.len() {
        let t = u16::from_be_bytes([body[i], body[i + 1]]);
        let l = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + l)?;
        if (t == 0x0020 || t == 0x0001) && l == 8 && v[1] == 1 {
            let mut port = u16::from_be_bytes([v[2], v[3]]);
            let mut ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            if t == 0x0020 {
                port ^= 0x2112;
                ip ^= 0x2112_a442;
                return Some(SocketAddr::from((Ipv4Addr::from(ip), port)));
            }
            plain = Some(SocketAddr::from((Ipv4Addr::from(ip), port)));
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    plain
}

fn check(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn log_file(p: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
