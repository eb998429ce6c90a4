//! The social test world of DESIGN.md §8: an "internet" namespace running an XMPP server
//! (prosody or ejabberd, [`XmppServerKind`]) and coturn (STUN/TURN), two NAT routers
//! (endpoint-independent and symmetric) and five hosts.
//!
//! ```text
//!                       inet (bridge br0 198.18.0.0/24)
//!   XMPP 198.18.0.1:5222      coturn 198.18.0.1:3478 (+198.18.0.2 for RFC 5780)
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

use crate::auth_server::{AuthServer, API_SECRET, AUTH_CLIENT_ID, AUTH_SERVER_ADDR};
use crate::dns_server::{DnsRecord, Dnsmasq};
use crate::netns::{require_root, Namespace};
use crate::turn_server::{Coturn, CoturnAuth};
use crate::two_hosts::StateDir;
use crate::world_files::{check, mkdir, write};
use crate::world_net::{bridge_port, c2s_attempts, count_c2s_attempts, nat_router, Node};
use crate::xmpp_server::{Extras, Federation, OfferedTurn, TokenLookup, XmppServer, S2S_PORT};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub use crate::turn_server::{stun_binding, stun_mapped};
pub use crate::world_files::wait_port;
pub use crate::xmpp_server::XmppServerKind;

/// The XMPP domain and TURN realm.
pub const DOMAIN: &str = "svpn.test";
/// The server address of the world: prosody, coturn's primary listening and relay address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The other domain of a federated world ([`SocialWorld::federated`]) and its server's
/// address: the other server software, federating with the first over s2s.
pub const REMOTE_DOMAIN: &str = "elsewhere.test";
pub const REMOTE_SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const REMOTE_XMPP_ADDR: SocketAddrV4 = SocketAddrV4::new(REMOTE_SERVER_IP, 5222);
/// coturn's second listening address (RFC 5780 alternate address).
pub const SERVER_ALT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The XMPP server's client-to-server port (STARTTLS required).
pub const XMPP_ADDR: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 5222);
/// coturn: STUN and TURN over UDP.
pub const TURN_ADDR: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 3478);
pub const STUN_ADDR: SocketAddrV4 = TURN_ADDR;
pub const TURN_USER: &str = "svpn";
pub const TURN_PASSWORD: &str = "turnpass";
/// The coturn the XMPP server hands out (XEP-0215) in worlds built with
/// [`SocialWorld::with_offered_turn`]: shared-secret mode, its own port and relay ports.
pub const OFFERED_TURN_ADDR: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 3490);
const OFFERED_TURN_RELAY_PORTS: (u16, u16) = (49300, 49399);
const OFFERED_TURN_SECRET: &str = "xep0215-shared-secret";
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

pub(crate) const INET_GW: Ipv4Addr = SERVER_IP;
const CONE_LAN: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const SYM_LAN: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 1);
pub(crate) const PREFIX: u8 = 24;
/// The black hole behind the internet's default route: a neighbour that never answers.
const BLACKHOLE_LOCAL: &str = "198.18.255.1/30";
const BLACKHOLE_GW: &str = "198.18.255.2";
const BLACKHOLE_MAC: &str = "02:53:56:50:4e:01";
/// The host-side interface of every host.
pub const HOST_IF: &str = "eth0";

static WORLDS: AtomicU32 = AtomicU32::new(0);

struct Host {
    name: &'static str,
    node: Node,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
}

/// The world. Field order is drop order: processes, then hosts, routers and the internet,
/// then the state directory.
pub struct SocialWorld {
    /// The DNS server, once a test asked for one ([`SocialWorld::serve_dns`]).
    dns: Option<Dnsmasq>,
    xmpp: XmppServer,
    /// The other domain's server in a federated world.
    remote: Option<XmppServer>,
    /// The authorization server ejabberd asks about tokens, in worlds that have one.
    auth_server: Option<AuthServer>,
    coturn: Coturn,
    /// The coturn the XMPP server offers, if this world has one.
    offered_turn: Option<Coturn>,
    hosts: Vec<Host>,
    cone: Node,
    sym: Node,
    inet: Node,
    state: StateDir,
}

impl SocialWorld {
    /// The world with prosody as its XMPP server.
    pub fn new(tag: &str) -> SocialWorld {
        SocialWorld::with_server(tag, XmppServerKind::Prosody)
    }

    /// Builds the whole world and returns once the XMPP server and coturn answer. Panics
    /// (tearing down whatever was already built) on any failure.
    pub fn with_server(tag: &str, kind: XmppServerKind) -> SocialWorld {
        SocialWorld::build(tag, kind, Plan::default())
    }

    /// The world whose XMPP server takes sign-in tokens from an authorization server of its
    /// own ([`crate::auth_server`]: the browser sign-in with the authorization code and
    /// PKCE) whose accounts are `accounts` (user, password at that server; the JIDs are
    /// `user@svpn.test`): ejabberd asks it about X-OAUTH2 tokens (`oauth_db_type: rest`),
    /// prosody about OAUTHBEARER ones (prosody-modules' `mod_auth_oauthbearer`, and then
    /// takes no passwords).
    pub fn with_authorization_server(
        tag: &str,
        kind: XmppServerKind,
        accounts: &[(&str, &str)],
    ) -> SocialWorld {
        let accounts = accounts
            .iter()
            .map(|(u, p)| (format!("{u}@{DOMAIN}"), p.to_string()))
            .collect();
        let plan = Plan {
            auth_accounts: Some(accounts),
            ..Plan::default()
        };
        SocialWorld::build(tag, kind, plan)
    }

    /// The world with two XMPP servers that federate: `kind` for [`DOMAIN`], the other
    /// software for [`REMOTE_DOMAIN`] at [`REMOTE_XMPP_ADDR`]. Each finds the other by the
    /// SRV records `_xmpp-server._tcp` of the world's DNS server (running from the start,
    /// also serving `_xmpp-client._tcp` for the remote domain) and accepts the other's
    /// certificate from the world's CA.
    pub fn federated(tag: &str, kind: XmppServerKind) -> SocialWorld {
        let plan = Plan {
            federate: true,
            ..Plan::default()
        };
        SocialWorld::build(tag, kind, plan)
    }

    /// The world whose XMPP server also hands out a second coturn, with temporary
    /// credentials (XEP-0215: prosody's `mod_turn_external`, ejabberd's `mod_stun_disco`),
    /// at [`OFFERED_TURN_ADDR`].
    pub fn with_offered_turn(tag: &str, kind: XmppServerKind) -> SocialWorld {
        let plan = Plan {
            offer_turn: true,
            ..Plan::default()
        };
        SocialWorld::build(tag, kind, plan)
    }

    /// Like [`SocialWorld::with_offered_turn`] with prosody handing out credentials that last
    /// only `lifetime_secs`.
    pub fn with_short_lived_turn_credentials(tag: &str, lifetime_secs: u32) -> SocialWorld {
        let plan = Plan {
            offer_turn: true,
            offered_lifetime: Some(lifetime_secs),
            ..Plan::default()
        };
        SocialWorld::build(tag, XmppServerKind::Prosody, plan)
    }

    fn build(tag: &str, kind: XmppServerKind, plan: Plan) -> SocialWorld {
        let Plan {
            offer_turn,
            offered_lifetime,
            federate,
            auth_accounts,
        } = plan;
        require_root();
        // Created atomically under an unpredictable name (the demo runs as root in /tmp),
        // then opened up for the servers' users.
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
        let mut server_ips = vec![SERVER_IP, SERVER_ALT_IP];
        if federate {
            server_ips.push(REMOTE_SERVER_IP);
        }
        if auth_accounts.is_some() {
            server_ips.push(*AUTH_SERVER_ADDR.ip());
        }
        for ip in server_ips {
            i.ip(&["addr", "add", &format!("{ip}/{PREFIX}"), "dev", "br0"]);
        }
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
        // Every NAT's WAN address and every host on the internet.
        let sources = [CONE_WAN, SYM_WAN]
            .into_iter()
            .chain(HOST_PLAN.iter().filter(|h| h.1 == Site::Inet).map(|h| h.2));
        count_c2s_attempts(i, XMPP_ADDR.port(), sources);

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

        let certs = crate::certs::make(&state.0.join("ca"), DOMAIN);
        let offer = offer_turn.then(|| OfferedTurn {
            addr: OFFERED_TURN_ADDR,
            secret: OFFERED_TURN_SECRET.into(),
            lifetime_secs: offered_lifetime,
        });
        let mut dns = None;
        let federation = federate.then(|| {
            // The servers (in the internet namespace) resolve through the world's DNS.
            write(
                &Path::new("/etc/netns")
                    .join(inet.ns.name())
                    .join("resolv.conf"),
                &format!("nameserver {SERVER_IP}\n"),
            );
            let mut server = Dnsmasq::new(&state.0, SERVER_IP);
            server.serve(&inet.ns, &federation_records());
            dns = Some(server);
            Federation {
                dns: SERVER_IP,
                ca_cert: certs.ca_cert.clone(),
            }
        });
        let auth_server =
            auth_accounts.map(|accounts| AuthServer::start(&state.0, &inet.ns, &certs, &accounts));
        let extras = Extras {
            offer,
            federation,
            token_lookup: auth_server.as_ref().map(|_| TokenLookup {
                url: format!("https://{AUTH_SERVER_ADDR}"),
                secret: API_SECRET.into(),
                client_id: AUTH_CLIENT_ID.into(),
            }),
        };
        let mut xmpp = XmppServer::prepare(kind, &state.0, &certs, XMPP_ADDR, DOMAIN, &extras);
        let mut remote = extras.federation.map(|f| {
            let other = match kind {
                XmppServerKind::Prosody => XmppServerKind::Ejabberd,
                XmppServerKind::Ejabberd => XmppServerKind::Prosody,
            };
            XmppServer::prepare(
                other,
                &state.0,
                &certs.for_domain(REMOTE_DOMAIN),
                REMOTE_XMPP_ADDR,
                REMOTE_DOMAIN,
                &Extras {
                    federation: Some(f),
                    ..Extras::default()
                },
            )
        });
        let mut coturn = Coturn::new(
            &state.0,
            [SERVER_IP, SERVER_ALT_IP],
            TURN_ADDR.port(),
            TURN_RELAY_PORTS,
            CoturnAuth::LongTerm(format!("{TURN_USER}:{TURN_PASSWORD}")),
            DOMAIN,
        );
        coturn.start(&inet.ns);
        let offered_turn = offer_turn.then(|| {
            let mut offered = Coturn::new(
                &state.0,
                [SERVER_IP, SERVER_ALT_IP],
                OFFERED_TURN_ADDR.port(),
                OFFERED_TURN_RELAY_PORTS,
                CoturnAuth::SharedSecret(OFFERED_TURN_SECRET.into()),
                DOMAIN,
            );
            offered.start(&inet.ns);
            offered
        });
        xmpp.start(&inet.ns);
        if let Some(r) = remote.as_mut() {
            r.start(&inet.ns);
        }

        SocialWorld {
            dns,
            xmpp,
            remote,
            auth_server,
            coturn,
            offered_turn,
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

    /// The address the servers see a host's connections come from: its NAT router's WAN
    /// address, or its own.
    pub fn public_addr(&self, name: &str) -> Ipv4Addr {
        match self.host_entry(name).gateway {
            CONE_LAN => CONE_WAN,
            SYM_LAN => SYM_WAN,
            _ => self.host_addr(name),
        }
    }

    /// The internet namespace (the XMPP server, coturn).
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

    /// The throwaway CA that signed the XMPP server's certificate: clients trust only this.
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

    /// Which XMPP server this world runs.
    pub fn xmpp_kind(&self) -> XmppServerKind {
        self.xmpp.kind()
    }

    pub fn xmpp_log_path(&self) -> PathBuf {
        self.xmpp.log_path()
    }

    pub fn coturn_log_path(&self) -> PathBuf {
        self.coturn.log_path()
    }

    /// The log of the coturn the XMPP server offers ([`SocialWorld::with_offered_turn`]).
    pub fn offered_turn_log_path(&self) -> Option<PathBuf> {
        self.offered_turn.as_ref().map(Coturn::log_path)
    }

    /// The XMPP server's PID while it runs.
    pub fn xmpp_pid(&mut self) -> Option<u32> {
        self.xmpp.pid()
    }

    /// coturn's PID while it runs.
    pub fn coturn_pid(&mut self) -> Option<u32> {
        self.coturn.pid()
    }

    /// Creates the XMPP account `user@svpn.test`. prosody takes it whether or not it runs;
    /// ejabberd must be running.
    pub fn register(&self, user: &str, password: &str) {
        self.xmpp.register(&self.inet.ns, user, password);
    }

    /// Serves `records` — and in a federated world its servers' own records, nothing else —
    /// from the world's DNS server at [`SocialWorld::dns_addr`] (started, or restarted with
    /// the new records).
    pub fn serve_dns(&mut self, records: &[DnsRecord]) {
        let state = self.state.0.clone();
        let mut all = records.to_vec();
        if self.remote.is_some() {
            all.extend(federation_records());
        }
        self.dns
            .get_or_insert_with(|| Dnsmasq::new(&state, SERVER_IP))
            .serve(&self.inet.ns, &all);
    }

    /// The queries the world's DNS server was asked so far (none before it runs).
    pub fn dns_queries(&self) -> Vec<String> {
        self.dns.as_ref().map(Dnsmasq::queries).unwrap_or_default()
    }

    /// Where the world's DNS server listens (once [`SocialWorld::serve_dns`] started it).
    pub fn dns_addr(&self) -> Ipv4Addr {
        SERVER_IP
    }

    /// SRV records for the domain's STARTTLS service (`_xmpp-client._tcp`) at
    /// `c2s.svpn.test` on the XMPP server's port, and that name's address: what a domain
    /// whose server is not at the domain's own name publishes.
    pub fn srv_records(&self) -> Vec<DnsRecord> {
        vec![
            DnsRecord::Srv {
                name: format!("_xmpp-client._tcp.{DOMAIN}"),
                target: format!("c2s.{DOMAIN}"),
                port: XMPP_ADDR.port(),
                priority: 0,
                weight: 5,
            },
            DnsRecord::A {
                name: format!("c2s.{DOMAIN}"),
                addr: *XMPP_ADDR.ip(),
            },
        ]
    }

    /// ejabberd's OAuth token endpoint (the world's certificate names the domain; clients
    /// reach it at the XMPP server's address).
    pub fn oauth_token_url(&self) -> String {
        format!(
            "https://{DOMAIN}:{}/oauth/token",
            crate::xmpp_server::OAUTH_HTTPS_PORT
        )
    }

    /// A sign-in token for `user` valid `ttl_secs`, as `ejabberdctl oauth_issue_token` makes.
    pub fn issue_token(&self, user: &str, ttl_secs: u32) -> String {
        self.xmpp.issue_token(&self.inet.ns, user, ttl_secs)
    }

    /// Revokes a sign-in token (at the authorization server, in worlds that have one).
    pub fn revoke_token(&self, token: &str) {
        match &self.auth_server {
            Some(a) => a.revoke(&self.inet.ns, token),
            None => self.xmpp.revoke_token(&self.inet.ns, token),
        }
    }

    /// Creates the account `user@elsewhere.test` on the other server of a federated world.
    pub fn register_remote(&self, user: &str, password: &str) {
        self.remote().register(&self.inet.ns, user, password);
    }

    fn remote(&self) -> &XmppServer {
        self.remote
            .as_ref()
            .expect("a federated world (SocialWorld::federated)")
    }

    /// The other server's software in a federated world.
    pub fn remote_kind(&self) -> XmppServerKind {
        self.remote().kind()
    }

    /// Creates several accounts at once (ejabberd's control tool takes seconds per call).
    pub fn register_all(&self, accounts: &[(&str, &str)]) {
        std::thread::scope(|scope| {
            for (user, password) in accounts {
                scope.spawn(move || self.register(user, password));
            }
        });
    }

    /// Stops the XMPP server cleanly (SIGTERM: clients see their streams closed and their
    /// contacts' presence go unavailable first; SIGKILL after 10 s). Accounts and other data
    /// stay for [`SocialWorld::start_xmpp`].
    pub fn stop_xmpp(&mut self) {
        self.xmpp.stop();
    }

    /// Makes the XMPP server's data so far (accounts, rosters) survive a crash, as it would on
    /// a server that has run for minutes.
    pub fn sync_xmpp(&self) {
        self.xmpp.sync(&self.inet.ns);
    }

    /// Kills the XMPP server at once (SIGKILL), as a crash would.
    pub fn kill_xmpp(&mut self) {
        self.xmpp.kill();
    }

    /// Starts the XMPP server again with the same configuration and data and waits until it
    /// accepts connections. Does nothing while it runs.
    pub fn start_xmpp(&mut self) {
        self.xmpp.start(&self.inet.ns);
    }

    /// Stops coturn (its allocations are lost).
    pub fn stop_coturn(&mut self) {
        self.coturn.stop();
    }

    /// Starts coturn again and waits until it answers.
    pub fn start_coturn(&mut self) {
        self.coturn.start(&self.inet.ns);
    }

    /// TCP connection attempts to the XMPP port from `source` seen so far by the internet
    /// namespace (counted whether or not the server runs: a client's login attempts).
    pub fn xmpp_connection_attempts(&self, source: Ipv4Addr) -> u64 {
        c2s_attempts(&self.inet.ns, source)
    }

    /// Switches IPv6 off in a host's namespace (an IPv4-only network).
    pub fn disable_ipv6(&self, name: &str) {
        let ns = self.host(name);
        for key in ["all", "default", "lo", HOST_IF] {
            check(
                ns.output(
                    "sysctl",
                    &["-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")],
                ),
                "sysctl disable_ipv6",
            );
        }
    }

    /// Drops all traffic between two hosts of one LAN inside both hosts, as a Wi-Fi with
    /// client isolation does: they reach each other only through the internet.
    pub fn isolate(&self, a: &str, b: &str) {
        for (me, other) in [(a, b), (b, a)] {
            let other = self.host_addr(other).to_string();
            let ns = self.host(me);
            for chain in [["-A", "INPUT", "-s"], ["-A", "OUTPUT", "-d"]] {
                let mut args = vec!["-w"];
                args.extend_from_slice(&chain);
                args.extend_from_slice(&[other.as_str(), "-j", "DROP"]);
                check(ns.output("iptables", &args), "iptables isolate");
            }
        }
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

impl Drop for SocialWorld {
    fn drop(&mut self) {
        // A failing test shows what the servers saw (the state directory goes with the world).
        if std::thread::panicking() {
            let mut logs = vec![
                (self.xmpp.kind().name(), self.xmpp.log_path()),
                ("coturn", self.coturn.log_path()),
            ];
            if let Some(r) = &self.remote {
                logs.push((r.kind().name(), r.log_path()));
            }
            if let Some(a) = &self.auth_server {
                logs.push(("authorization server", a.log_path()));
            }
            for (what, path) in logs {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("--- last lines of the {what} log ({})", path.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// What a world is built with besides its server, coturn, routers and hosts.
#[derive(Default)]
struct Plan {
    offer_turn: bool,
    /// How long the offered credentials last (none: the server's default).
    offered_lifetime: Option<u32>,
    federate: bool,
    /// An authorization server with these accounts (JID, password).
    auth_accounts: Option<Vec<(String, String)>>,
}

/// What a federated world's DNS serves: each domain's s2s service (SRV `_xmpp-server._tcp`
/// at `s2s.<domain>`), and the remote domain's client service (`_xmpp-client._tcp` at
/// `c2s.<domain>`); nothing on the bare domains.
fn federation_records() -> Vec<DnsRecord> {
    let mut records = Vec::new();
    for (domain, ip) in [(DOMAIN, SERVER_IP), (REMOTE_DOMAIN, REMOTE_SERVER_IP)] {
        records.push(DnsRecord::Srv {
            name: format!("_xmpp-server._tcp.{domain}"),
            target: format!("s2s.{domain}"),
            port: S2S_PORT,
            priority: 0,
            weight: 5,
        });
        records.push(DnsRecord::A {
            name: format!("s2s.{domain}"),
            addr: ip,
        });
    }
    records.push(DnsRecord::Srv {
        name: format!("_xmpp-client._tcp.{REMOTE_DOMAIN}"),
        target: format!("c2s.{REMOTE_DOMAIN}"),
        port: REMOTE_XMPP_ADDR.port(),
        priority: 0,
        weight: 5,
    });
    records.push(DnsRecord::A {
        name: format!("c2s.{REMOTE_DOMAIN}"),
        addr: REMOTE_SERVER_IP,
    });
    records
}
