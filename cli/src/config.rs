//! The configuration file (TOML). Unknown keys and bad values are errors that name the key
//! and the line; every option has a documented default (README, "Configuration").

use serde::Deserialize;
use socialvpn_core::config::{
    AccountSettings, ConfigError as SettingError, Credentials, IceServerSettings, Settings,
};
use socialvpn_core::engine::LinkPolicy;
use socialvpn_core::subnet::{Ipv4Subnet, DEFAULT_SUBNET};
use socialvpn_core::xmpp::connect::TlsTrust;
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
    #[error("{}: {error}", path.display())]
    Setting { path: PathBuf, error: SettingError },
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
    /// The file this came from (for messages).
    #[serde(skip)]
    pub path: PathBuf,
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
    /// "host:port" to connect to (STARTTLS) instead of looking the domain's server up by
    /// DNS SRV records.
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Where `socialvpn login` asks for a token; default ejabberd's
    /// `https://<domain>:5443/oauth/token`.
    pub token_url: Option<String>,
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
    /// `host[:port]` (port 3478 if none); the XMPP server's offer (XEP-0215) if unset.
    pub stun: Option<String>,
    /// `host[:port]` (port 3478 if none); the XMPP server's offer (XEP-0215) if unset.
    pub turn: Option<String>,
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
        let mut config: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.path = path.to_path_buf();
        // Checks serde cannot express, reported with the key's line.
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(String::new(), |n| format!("line {}: ", n + 1))
        };
        // The settings every front end shares are checked by the core (a placeholder
        // password: the real one is read when the daemon starts).
        if let Err(e) = config
            .settings(Credentials::Password("-".into()))
            .check("00000000")
        {
            let (key, line_key) = toml_key(&e);
            let reason = match e {
                SettingError::Jid(jid) => format!("'{jid}' is not a JID like user@example.org"),
                SettingError::Invalid { reason, .. } => reason,
            };
            return Err(invalid(format!("{}{key}: {reason}", line_of(line_key))));
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

    /// How `up` signs in: the token `socialvpn login` stored, else the password.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        match crate::login::stored_token(&self.state_dir, &self.account.jid) {
            Ok(Some(token)) => Ok(token),
            Ok(None) => self.password().map(Credentials::Password),
            Err(e) => Err(ConfigError::Password(e)),
        }
    }

    /// Which certificates the XMPP and sign-in servers must present.
    pub fn trust(&self) -> TlsTrust {
        match &self.account.ca_file {
            Some(path) => TlsTrust::CaFile(path.clone()),
            None => TlsTrust::Platform,
        }
    }

    /// The engine configuration; `uid_hex` names the default resource.
    pub fn engine_config(
        &self,
        credentials: Credentials,
        uid_hex: &str,
    ) -> Result<EngineConfig, ConfigError> {
        self.settings(credentials)
            .check(uid_hex)
            .map_err(|error| ConfigError::Setting {
                path: self.path.clone(),
                error,
            })
    }

    /// The configuration in the core's terms.
    fn settings(&self, credentials: Credentials) -> Settings {
        let url = |scheme: &str, addr: &str| format!("{scheme}:{addr}");
        let mut ice_servers: Vec<IceServerSettings> = self
            .ice
            .stun
            .as_deref()
            .map(|addr| IceServerSettings {
                url: url("stun", addr),
                username: None,
                password: None,
            })
            .into_iter()
            .collect();
        if let Some(addr) = self.ice.turn.as_deref() {
            ice_servers.push(IceServerSettings {
                url: url("turn", addr),
                username: Some(self.ice.turn_user.clone()),
                password: Some(self.ice.turn_password.clone()),
            });
        }
        Settings {
            state_dir: self.state_dir.clone(),
            subnet: self.network.subnet.to_string(),
            listen: self.network.listen,
            account: Some(AccountSettings {
                jid: self.account.jid.clone(),
                credentials,
                resource: self.account.resource.clone(),
                server: self.account.server.clone(),
                // The system's resolver configuration.
                dns_servers: Vec::new(),
                ca_file: self.account.ca_file.clone(),
            }),
            ice_servers,
            link_policy: match self.links.policy {
                PolicyName::Proactive => LinkPolicy::Proactive {
                    max_links: self.links.max_links,
                },
                PolicyName::OnDemand => LinkPolicy::OnDemand {
                    max_links: self.links.max_links,
                    idle_secs: self.links.idle_secs,
                },
            },
            // The daemon notices moves between networks by itself.
            watch_network: true,
            // Linux routes the daemon's own sockets outside the tunnel by itself.
            protect: None,
        }
    }
}

/// Whether an `ice_servers` error is about the STUN server.
fn reason_names_stun(e: &SettingError) -> bool {
    match e {
        SettingError::Invalid { reason, .. } => reason.contains("STUN"),
        SettingError::Jid(_) => false,
    }
}

/// The file's key for a setting the core refused, and the word its line starts with.
fn toml_key(e: &SettingError) -> (&'static str, &'static str) {
    match e {
        SettingError::Jid(_) => ("account.jid", "jid"),
        SettingError::Invalid { field, .. } => match *field {
            "subnet" => ("network.subnet", "subnet"),
            "server" => ("account.server", "server"),
            "resource" => ("account.resource", "resource"),
            "password" => ("account.password_file", "password"),
            // The core names the server in its reason: `stun:…` or `turn:…`, or its host.
            "ice_servers" if reason_names_stun(e) => ("ice.stun", "stun"),
            "ice_servers" => ("ice.turn", "turn"),
            other => (other, other),
        },
    }
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
        let e = c
            .engine_config(Credentials::Password("pw".into()), "0123456789abcdef")
            .unwrap();
        let social = e.social.unwrap();
        assert_eq!(social.account.resource, "socialvpn-01234567");
        assert_eq!(
            social.account.trust,
            socialvpn_core::xmpp::connect::TlsTrust::Platform
        );
    }

    #[test]
    fn stun_and_turn_servers_may_be_host_names_with_the_default_port() {
        let c = parse(
            "[account]\njid = \"alice@example.org\"\n[ice]\nstun = \"localhost\"\n\
             turn = \"localhost:3479\"\nturn_user = \"u\"\nturn_password = \"p\"\n",
        )
        .unwrap();
        let e = c
            .engine_config(Credentials::Password("pw".into()), "0123456789abcdef")
            .unwrap();
        let servers = e.social.unwrap().servers;
        assert_eq!(servers.stun.map(|s| s.port()), Some(3478));
        assert_eq!(servers.turn.map(|t| t.addr.port()), Some(3479));
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
        // The core checks what every front end shares; the file names its key and line.
        let e = parse("[account]\njid = \"a@b.c\"\nserver = \"xmpp.b.c\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3: account.server: 'xmpp.b.c' is not host:port"),
            "{e}"
        );
        let e = parse("[account]\njid = \"a@b.c\"\n[ice]\nstun = \"[::1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4: ice.stun: STUN server '[::1'"), "{e}");
        let e = parse("[account]\njid = \"a@b.c\"\nresource = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: account.resource"), "{e}");
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
