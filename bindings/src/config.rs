//! The config record the app fills in from its login screen and settings, and its
//! translation into the engine's configuration (every field checked, errors name the field).

use crate::error::VpnError;
use socialvpn_core::engine::{LinkPolicy, SocialConfig};
use socialvpn_core::links::servers::{IceServers, TurnServer};
use socialvpn_core::protect::SocketProtector;
use socialvpn_core::subnet::Ipv4Subnet;
use socialvpn_core::xmpp::connect::{TlsTrust, XmppAccount};
use socialvpn_core::xmpp::BareJid;
use socialvpn_core::EngineConfig;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Everything an engine needs; the app keeps it (the password in the platform's keystore).
#[derive(Clone, uniffi::Record)]
pub struct VpnConfig {
    /// An app-private directory: the device key, the friends' addresses and the toggles.
    pub state_dir: String,
    /// The XMPP account, `user@domain`.
    pub jid: String,
    pub password: String,
    /// The XMPP resource of this device; empty picks `socialvpn-` + the device id's start.
    pub resource: String,
    /// `host:port` of the XMPP server when it is not the JID's domain on port 5222.
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust instead of the public roots (private servers).
    pub ca_file: Option<String>,
    /// At most one `stun:host[:port]` and one `turn:host[:port]` (with username and
    /// password), as in WebRTC's RTCIceServer.
    pub ice_servers: Vec<IceServer>,
    /// The user's overlay subnet, in 100.64.0.0/10 for example `100.64.0.0/16`.
    pub subnet: String,
    /// UDP port of the links; 0 lets the system pick.
    pub listen_port: u16,
    pub link_policy: LinkPolicyConfig,
}

#[derive(Clone, uniffi::Record)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Which friend devices get links.
#[derive(Clone, Copy, uniffi::Enum)]
pub enum LinkPolicyConfig {
    /// Every online, enabled friend device, up to `max_links` (IPOP's behaviour).
    Proactive { max_links: u32 },
    /// Only when traffic is addressed to a device; links idle for `idle_secs` close (for
    /// large rosters and battery).
    OnDemand { max_links: u32, idle_secs: u64 },
}

const DEFAULT_ICE_PORT: u16 = 3478;

fn invalid(reason: String) -> VpnError {
    VpnError::InvalidConfig { reason }
}

impl VpnConfig {
    /// The engine configuration. Resolves the STUN/TURN host names (this may block on DNS:
    /// the caller is off the UI thread). `uid_hex` names the default resource.
    pub(crate) fn engine_config(
        &self,
        uid_hex: &str,
        protect: Option<SocketProtector>,
    ) -> Result<EngineConfig, VpnError> {
        let jid: BareJid = self.jid.parse().map_err(|_| VpnError::InvalidJid {
            jid: self.jid.clone(),
        })?;
        if jid.node().is_none() {
            return Err(VpnError::InvalidJid {
                jid: self.jid.clone(),
            });
        }
        if self.password.is_empty() {
            return Err(invalid("password: empty".into()));
        }
        let resource = if self.resource.is_empty() {
            format!("socialvpn-{}", &uid_hex[..8.min(uid_hex.len())])
        } else if jid.with_resource_str(&self.resource).is_err() {
            return Err(invalid(format!(
                "resource: '{}' is not a valid XMPP resource",
                self.resource
            )));
        } else {
            self.resource.clone()
        };
        let server = match &self.server {
            None => None,
            Some(s) => Some(
                parse_host_port(s, None)
                    .ok_or_else(|| invalid(format!("server: '{s}' is not host:port")))?,
            ),
        };
        let subnet = self.subnet()?;
        if self.state_dir.is_empty() {
            return Err(invalid("state_dir: empty".into()));
        }
        Ok(EngineConfig {
            state_dir: PathBuf::from(&self.state_dir),
            subnet,
            listen: SocketAddr::from(([0, 0, 0, 0], self.listen_port)),
            social: Some(SocialConfig {
                account: XmppAccount {
                    jid,
                    password: self.password.clone(),
                    resource,
                    server,
                    trust: match &self.ca_file {
                        Some(path) => TlsTrust::CaFile(PathBuf::from(path)),
                        None => TlsTrust::PublicRoots,
                    },
                    protect: protect.clone(),
                },
                servers: self.ice_servers()?,
                policy: self.link_policy.into(),
            }),
            protect,
            // The app reports network changes from the platform's callbacks.
            watch_network: false,
        })
    }

    pub(crate) fn subnet(&self) -> Result<Ipv4Subnet, VpnError> {
        self.subnet
            .parse()
            .map_err(|e| invalid(format!("subnet: '{}': {e}", self.subnet)))
    }

    fn ice_servers(&self) -> Result<IceServers, VpnError> {
        let mut servers = IceServers::default();
        for server in &self.ice_servers {
            let url = server.url.trim();
            if let Some(rest) = url.strip_prefix("stun:") {
                if servers.stun.is_some() {
                    return Err(invalid("ice_servers: more than one STUN server".into()));
                }
                servers.stun = Some(resolve(rest)?);
            } else if let Some(rest) = url.strip_prefix("turn:") {
                if servers.turn.is_some() {
                    return Err(invalid("ice_servers: more than one TURN server".into()));
                }
                let (Some(username), Some(password)) = (&server.username, &server.password) else {
                    return Err(invalid(format!(
                        "ice_servers: '{url}' needs a username and a password"
                    )));
                };
                servers.turn = Some(TurnServer {
                    addr: resolve(rest)?,
                    username: username.clone(),
                    password: password.clone(),
                });
            } else {
                return Err(invalid(format!(
                    "ice_servers: '{url}' is neither stun:host[:port] nor turn:host[:port] \
                     (turns: is not supported)"
                )));
            }
        }
        Ok(servers)
    }
}

impl From<LinkPolicyConfig> for LinkPolicy {
    fn from(p: LinkPolicyConfig) -> LinkPolicy {
        match p {
            LinkPolicyConfig::Proactive { max_links } => LinkPolicy::Proactive {
                max_links: max_links as usize,
            },
            LinkPolicyConfig::OnDemand {
                max_links,
                idle_secs,
            } => LinkPolicy::OnDemand {
                max_links: max_links as usize,
                idle_secs,
            },
        }
    }
}

/// `host:port`, or `host` alone when a default port is given (IPv6 literals in brackets).
fn parse_host_port(s: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let bracketed = s.starts_with('[');
    match s.rsplit_once(':') {
        Some((host, port)) if !bracketed || host.ends_with(']') => {
            let port = port.parse().ok()?;
            (!host.is_empty()).then(|| (host.to_string(), port))
        }
        _ => default_port
            .filter(|_| !s.is_empty())
            .map(|p| (s.to_string(), p)),
    }
}

/// The first IPv4 address of `host[:port]` (the underlay is IPv4).
fn resolve(host_port: &str) -> Result<SocketAddr, VpnError> {
    let (host, port) = parse_host_port(host_port, Some(DEFAULT_ICE_PORT))
        .ok_or_else(|| invalid(format!("ice_servers: '{host_port}' is not host[:port]")))?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("ice_servers: cannot resolve '{host}': {e}")))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| invalid(format!("ice_servers: '{host}' has no IPv4 address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VpnConfig {
        VpnConfig {
            state_dir: "/tmp/x".into(),
            jid: "alice@example.org".into(),
            password: "pw".into(),
            resource: String::new(),
            server: None,
            ca_file: None,
            ice_servers: vec![
                IceServer {
                    url: "stun:198.18.0.1".into(),
                    username: None,
                    password: None,
                },
                IceServer {
                    url: "turn:198.18.0.1:3479".into(),
                    username: Some("u".into()),
                    password: Some("p".into()),
                },
            ],
            subnet: "100.64.0.0/16".into(),
            listen_port: 0,
            link_policy: LinkPolicyConfig::Proactive { max_links: 8 },
        }
    }

    #[test]
    fn a_full_config_translates() {
        let engine = config().engine_config("0123456789", None).unwrap();
        let social = engine.social.unwrap();
        assert_eq!(social.account.resource, "socialvpn-01234567");
        assert_eq!(
            social.servers.stun,
            Some("198.18.0.1:3478".parse().unwrap())
        );
        assert_eq!(
            social.servers.turn.unwrap().addr,
            "198.18.0.1:3479".parse().unwrap()
        );
        assert_eq!(social.policy, LinkPolicy::Proactive { max_links: 8 });
    }

    #[test]
    fn bad_fields_are_named() {
        let reason = |c: VpnConfig| match c.engine_config("00", None) {
            Err(VpnError::InvalidConfig { reason }) => reason,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
        };
        let mut c = config();
        c.subnet = "192.0.2.0/40".into();
        assert!(reason(c).starts_with("subnet:"));
        let mut c = config();
        c.ice_servers[0].url = "turns:198.18.0.1".into();
        assert!(reason(c).contains("turns"));
        let mut c = config();
        c.ice_servers[1].password = None;
        assert!(reason(c).contains("username and a password"));
        let mut c = config();
        c.server = Some("xmpp.example.org".into());
        assert!(reason(c).starts_with("server:"));
        let mut c = config();
        c.resource = "a/b\u{0}".into();
        assert!(reason(c).starts_with("resource:"));
        let mut c = config();
        c.jid = "example.org".into();
        assert!(matches!(
            c.engine_config("00", None),
            Err(VpnError::InvalidJid { .. })
        ));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("h:5", None), Some(("h".to_string(), 5)));
        assert_eq!(parse_host_port("h", Some(7)), Some(("h".to_string(), 7)));
        assert_eq!(parse_host_port("h", None), None);
        assert_eq!(
            parse_host_port("[::1]:9", None),
            Some(("[::1]".to_string(), 9))
        );
        assert_eq!(parse_host_port(":9", None), None);
    }
}
