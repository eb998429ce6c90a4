//! The configuration file (TOML). Unknown keys and bad values are errors that name the key
//! and the line; every option has a documented default (README, "Configuration").

use serde::Deserialize;
use socialvpn_core::engine::{LinkPolicy, SocialConfig};
use socialvpn_core::links::servers::{IceServers, TurnServer};
use socialvpn_core::subnet::{Ipv4Subnet, DEFAULT_SUBNET};
use socialvpn_core::xmpp::connect::{TlsTrust, XmppAccount};
use socialvpn_core::xmpp::BareJid;
use socialvpn_core::EngineConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where `socialvpn up` and the other commands look for the configuration by default.
pub const DEFAULT_PATH: &str = "/etc/socialvpn/socialvpn.toml";
/// The control socket of a daemon whose configuration does not say.
pub const DEFAULT_SOCKET: &str = "/run/socialvpn/svpn0.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Password(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub account: Account,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub ice: Ice,
    #[serde(default)]
    pub links: Links,
    /// Where the key, the address book and the switches live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The daemon's control socket (owner-only).
    pub control_socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub jid: String,
    /// A file holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// The XMPP resource of this device; default "socialvpn-" + the first 8 hex digits of
    /// the device id (unique per install).
    pub resource: Option<String>,
    /// "host:port" to connect to instead of the JID's domain on 5222.
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_subnet")]
    pub subnet: Ipv4Subnet,
    #[serde(default = "default_tun")]
    pub tun: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            subnet: default_subnet(),
            tun: default_tun(),
            listen: default_listen(),
            mtu: default_mtu(),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ice {
    pub stun: Option<SocketAddr>,
    pub turn: Option<SocketAddr>,
    #[serde(default)]
    pub turn_user: String,
    #[serde(default)]
    pub turn_password: String,
}

impl std::fmt::Debug for Ice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ice")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("turn_user", &self.turn_user)
            .field("turn_password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    Proactive,
    OnDemand,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    #[serde(default = "default_policy")]
    pub policy: PolicyName,
    #[serde(default = "default_max_links")]
    pub max_links: usize,
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            policy: default_policy(),
            max_links: default_max_links(),
            idle_secs: default_idle_secs(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/socialvpn")
}
fn default_subnet() -> Ipv4Subnet {
    DEFAULT_SUBNET
}
fn default_tun() -> String {
    "svpn0".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
fn default_mtu() -> u16 {
    socialvpn_core::tun::DEFAULT_MTU
}
fn default_policy() -> PolicyName {
    PolicyName::Proactive
}
fn default_max_links() -> usize {
    64
}
fn default_idle_secs() -> u64 {
    300
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // Checks serde cannot express, reported with the key's line.
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(String::new(), |n| format!("line {}: ", n + 1))
        };
        if config.account.jid.parse::<BareJid>().is_err() || !config.account.jid.contains('@') {
            return Err(invalid(format!(
                "{}account.jid: '{}' is not a JID like user@example.org",
                line_of("jid"),
                config.account.jid
            )));
        }
        if !(1280..=1440).contains(&config.network.mtu) {
            return Err(invalid(format!(
                "{}network.mtu: {} is outside 1280..1440",
                line_of("mtu"),
                config.network.mtu
            )));
        }
        let tun = &config.network.tun;
        if tun.is_empty() || tun.len() > 15 || tun.contains('/') {
            return Err(invalid(format!(
                "{}network.tun: '{tun}' is not an interface name (1-15 characters)",
                line_of("tun")
            )));
        }
        if let Some(resource) = &config.account.resource {
            let jid: Result<BareJid, _> = config.account.jid.parse();
            if jid
                .map(|j| j.with_resource_str(resource).is_err())
                .unwrap_or(true)
            {
                return Err(invalid(format!(
                    "{}account.resource: '{resource}' is not a valid XMPP resource",
                    line_of("resource")
                )));
            }
        }
        if let Some(server) = &config.account.server {
            if parse_host_port(server).is_none() {
                return Err(invalid(format!(
                    "{}account.server: '{server}' is not host:port",
                    line_of("server")
                )));
            }
        }
        if config.ice.turn.is_some() && config.ice.turn_user.is_empty() {
            return Err(invalid(format!(
                "{}ice.turn_user: a TURN server needs a user name",
                line_of("turn")
            )));
        }
        if config.links.max_links == 0 {
            return Err(invalid(format!(
                "{}links.max_links: must be at least 1",
                line_of("max_links")
            )));
        }
        Ok(config)
    }

    /// The control socket path: configured, or /run/socialvpn/<tun>.sock.
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/socialvpn/{}.sock", self.network.tun)))
    }

    /// The password, from the file, the environment variable, or a prompt (never argv).
    pub fn password(&self) -> Result<String, ConfigError> {
        if let Some(path) = &self.account.password_file {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "the password file {} can be read by others: chmod 600 it",
                        path.display()
                    );
                }
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Password(format!(
                    "cannot read the password file {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(text.lines().next().unwrap_or("").to_string());
        }
        if let Some(var) = &self.account.password_env {
            return std::env::var(var).map_err(|_| {
                ConfigError::Password(format!("the environment variable {var} is not set"))
            });
        }
        rpassword::prompt_password(format!("Password for {}: ", self.account.jid))
            .map_err(|e| ConfigError::Password(format!("cannot read the password: {e}")))
    }

    /// The engine configuration; `uid_hex` names the default resource.
    pub fn engine_config(
        &self,
        password: String,
        uid_hex: &str,
    ) -> Result<EngineConfig, ConfigError> {
        let jid: BareJid = self.account.jid.parse().map_err(|_| ConfigError::Invalid {
            path: PathBuf::new(),
            message: format!("account.jid: '{}' is not a JID", self.account.jid),
        })?;
        let resource = self
            .account
            .resource
            .clone()
            .unwrap_or_else(|| format!("socialvpn-{}", &uid_hex[..8.min(uid_hex.len())]));
        let policy = match self.links.policy {
            PolicyName::Proactive => LinkPolicy::Proactive {
                max_links: self.links.max_links,
            },
            PolicyName::OnDemand => LinkPolicy::OnDemand {
                max_links: self.links.max_links,
                idle_secs: self.links.idle_secs,
            },
        };
        Ok(EngineConfig {
            state_dir: self.state_dir.clone(),
            subnet: self.network.subnet,
            listen: self.network.listen,
            social: Some(SocialConfig {
                account: XmppAccount {
                    jid,
                    password,
                    resource,
                    server: self.account.server.as_deref().and_then(parse_host_port),
                    trust: match &self.account.ca_file {
                        Some(path) => TlsTrust::CaFile(path.clone()),
                        None => TlsTrust::PublicRoots,
                    },
                    // Linux routes the daemon's own sockets outside the tunnel by itself.
                    protect: None,
                },
                servers: IceServers {
                    stun: self.ice.stun,
                    turn: self.ice.turn.map(|addr| TurnServer {
                        addr,
                        username: self.ice.turn_user.clone(),
                        password: self.ice.turn_password.clone(),
                    }),
                },
                policy,
            }),
            protect: None,
            // The daemon notices moves between networks by itself.
            watch_network: true,
        })
    }
}

fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = parse("[account]\njid = \"alice@example.org\"\n").unwrap();
        assert_eq!(c.network.subnet, DEFAULT_SUBNET);
        assert_eq!(c.network.tun, "svpn0");
        assert_eq!(c.links.policy, PolicyName::Proactive);
        assert_eq!(
            c.control_socket(),
            PathBuf::from("/run/socialvpn/svpn0.sock")
        );
        let e = c.engine_config("pw".into(), "0123456789abcdef").unwrap();
        let social = e.social.unwrap();
        assert_eq!(social.account.resource, "socialvpn-01234567");
        assert_eq!(social.account.trust, TlsTrust::PublicRoots);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let e = parse("[account]\njid = \"alice@example.org\"\ncolour = \"blue\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("line 3"), "{e}");
        let e = parse(
            "[account]\njid = \"alice@example.org\"\n[network]\nsubnet = \"100.64.0.1/16\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("subnet") && e.contains("line 4"), "{e}");
        let e = parse("[account]\njid = \"alice@example.org\"\n[network]\nmtu = 9000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("network.mtu") && e.contains("line 4"), "{e}");
        let e = parse("[account]\njid = \"not a jid\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("account.jid") && e.contains("line 2"), "{e}");
        let e = parse("[links]\npolicy = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy") || e.contains("account"), "{e}");
    }

    #[test]
    fn password_comes_from_file_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let c = parse(&format!(
            "[account]\njid = \"a@b.c\"\npassword_file = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(c.password().unwrap(), "s3cret");
        std::env::set_var("SVPN_TEST_PW", "from-env");
        let c = parse("[account]\njid = \"a@b.c\"\npassword_env = \"SVPN_TEST_PW\"\n").unwrap();
        assert_eq!(c.password().unwrap(), "from-env");
        let c = parse("[account]\njid = \"a@b.c\"\npassword_env = \"SVPN_TEST_UNSET\"\n").unwrap();
        assert!(c.password().is_err());
    }
}
