//! One configuration for every front end, checked in one place: the CLI's TOML file, the
//! apps' `VpnConfig` and the test node's JSON all fill in `Settings`, and `Settings::check`
//! turns it into the engine's configuration or names the field that is wrong.

use crate::engine::{EngineConfig, LinkPolicy, SocialConfig};
use crate::links::servers::{IceServers, TurnServer};
use crate::protect::SocketProtector;
use crate::subnet::Ipv4Subnet;
use crate::xmpp::connect::{TlsTrust, XmppAccount};
use crate::xmpp::discovery::Dns;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use xmpp_parsers::jid::BareJid;

/// The port of `stun:`/`turn:` servers named without one (RFC 8489).
pub const DEFAULT_ICE_PORT: u16 = 3478;

/// Everything an engine needs, as the user or the app gave it (text where the user types
/// it: checked by `check`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the device key, the address book and the switches live.
    pub state_dir: PathBuf,
    /// The user's overlay subnet (`100.64.0.0/16`).
    pub subnet: String,
    /// The links' UDP socket.
    pub listen: SocketAddr,
    /// The XMPP account; without one, links are configured by hand.
    pub account: Option<AccountSettings>,
    /// At most one `stun:host[:port]` and one `turn:host[:port]` (with credentials).
    pub ice_servers: Vec<IceServerSettings>,
    pub link_policy: LinkPolicy,
    /// Watch this machine's addresses (the Linux daemon); apps report changes themselves.
    pub watch_network: bool,
    /// The platform's socket protector (Android `VpnService.protect`).
    pub protect: Option<SocketProtector>,
}

#[derive(Clone)]
pub struct AccountSettings {
    /// `user@domain`.
    pub jid: String,
    pub credentials: Credentials,
    /// The XMPP resource of this device; none picks `socialvpn-` + the device id's start.
    pub resource: Option<String>,
    /// `host:port` of the XMPP server (STARTTLS); none: found by DNS SRV records, else the
    /// JID's domain on port 5222.
    pub server: Option<String>,
    /// The platform's DNS servers (IP addresses) for the SRV and host look-ups; empty: the
    /// system's configuration.
    pub dns_servers: Vec<String>,
    /// A PEM file of CA certificates to trust instead of the platform's trust store.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for AccountSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSettings")
            .field("jid", &self.jid)
            .field("credentials", &"<redacted>")
            .field("resource", &self.resource)
            .field("server", &self.server)
            .field("dns_servers", &self.dns_servers)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

pub use crate::xmpp::sasl::Credentials;

/// A STUN or TURN server as WebRTC's `RTCIceServer` names it.
#[derive(Clone, Debug)]
pub struct IceServerSettings {
    /// `stun:host[:port]` or `turn:host[:port]`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A setting that is wrong: which one, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{0}' is not a valid XMPP address (user@domain)")]
    Jid(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

impl Settings {
    /// The engine's configuration. Resolves STUN/TURN host names (may block on DNS).
    /// `uid_hex` names the default resource.
    pub fn check(&self, uid_hex: &str) -> Result<EngineConfig, ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "empty".into()));
        }
        let subnet = self.subnet()?;
        let social = match &self.account {
            None => None,
            Some(account) => Some(SocialConfig {
                account: account.check(uid_hex, self.protect.clone())?,
                servers: ice_servers(&self.ice_servers)?,
                policy: self.link_policy,
            }),
        };
        Ok(EngineConfig {
            state_dir: self.state_dir.clone(),
            subnet,
            listen: self.listen,
            social,
            protect: self.protect.clone(),
            watch_network: self.watch_network,
        })
    }

    /// The subnet, checked.
    pub fn subnet(&self) -> Result<Ipv4Subnet, ConfigError> {
        self.subnet
            .parse()
            .map_err(|e| invalid("subnet", format!("'{}': {e}", self.subnet)))
    }
}

impl AccountSettings {
    fn check(
        &self,
        uid_hex: &str,
        protect: Option<SocketProtector>,
    ) -> Result<XmppAccount, ConfigError> {
        let jid: BareJid = self
            .jid
            .parse()
            .map_err(|_| ConfigError::Jid(self.jid.clone()))?;
        if jid.node().is_none() {
            return Err(ConfigError::Jid(self.jid.clone()));
        }
        match &self.credentials {
            Credentials::Password(password) if password.is_empty() => {
                return Err(invalid("password", "empty".into()))
            }
            // A bearer token is printable ASCII without spaces (RFC 6750's b64token).
            Credentials::Token(token)
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(invalid(
                    "token",
                    "empty or not an access token (printable, no spaces)".into(),
                ))
            }
            _ => {}
        }
        let resource = match &self.resource {
            None => format!("socialvpn-{}", &uid_hex[..8.min(uid_hex.len())]),
            Some(r) if !r.is_empty() && jid.with_resource_str(r).is_ok() => r.clone(),
            Some(r) => {
                return Err(invalid(
                    "resource",
                    format!("'{r}' is not a valid XMPP resource"),
                ))
            }
        };
        let server = match &self.server {
            None => None,
            Some(s) => Some(
                parse_host_port(s, None)
                    .ok_or_else(|| invalid("server", format!("'{s}' is not host:port")))?,
            ),
        };
        let mut dns = Dns::default();
        for server in &self.dns_servers {
            dns.servers.push(
                server.trim().parse().map_err(|_| {
                    invalid("dns_servers", format!("'{server}' is not an IP address"))
                })?,
            );
        }
        Ok(XmppAccount {
            dns,
            jid,
            credentials: self.credentials.clone(),
            resource,
            server,
            trust: match &self.ca_file {
                Some(path) => TlsTrust::CaFile(path.clone()),
                None => TlsTrust::Platform,
            },
            protect,
        })
    }
}

fn ice_servers(list: &[IceServerSettings]) -> Result<IceServers, ConfigError> {
    let mut servers = IceServers::default();
    for server in list {
        let url = server.url.trim();
        if let Some(rest) = url.strip_prefix("stun:") {
            if servers.stun.is_some() {
                return Err(invalid("ice_servers", "more than one STUN server".into()));
            }
            servers.stun = Some(resolve("STUN", rest)?);
        } else if let Some(rest) = url.strip_prefix("turn:") {
            if servers.turn.is_some() {
                return Err(invalid("ice_servers", "more than one TURN server".into()));
            }
            let (Some(username), Some(password)) = (&server.username, &server.password) else {
                return Err(invalid(
                    "ice_servers",
                    format!("'{url}' needs a username and a password"),
                ));
            };
            servers.turn = Some(TurnServer {
                addr: resolve("TURN", rest)?,
                username: username.clone(),
                password: password.clone(),
            });
        } else {
            return Err(invalid(
                "ice_servers",
                format!(
                    "'{url}' is neither stun:host[:port] nor turn:host[:port] \
                     (turns: is not supported)"
                ),
            ));
        }
    }
    Ok(servers)
}

/// `host:port`, or `host` alone when a default port is given; an IPv6 literal in brackets
/// (`[2001:db8::1]:5222`), returned without them.
pub fn parse_host_port(s: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => default_port?,
                None => return None,
            };
            (host, port)
        }
        None => match s.rsplit_once(':') {
            // An IPv6 literal needs its brackets: `2001:db8::1` is no `host:port`.
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, port.parse().ok()?),
            None => (s, default_port?),
        },
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The first IPv4 address of the `kind` ("STUN"/"TURN") server `host[:port]`.
fn resolve(kind: &str, host_port: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: String| invalid("ice_servers", format!("{kind} server {reason}"));
    let (host, port) = parse_host_port(host_port, Some(DEFAULT_ICE_PORT))
        .ok_or_else(|| bad(format!("'{host_port}' is not host[:port]")))?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("'{host}' cannot be resolved: {e}")))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| bad(format!("'{host}' has no IPv4 address")))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
