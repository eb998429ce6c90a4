//! The config record the app fills in from its login screen and settings, and its
//! translation into the engine's configuration (every field checked, errors name the field).

use crate::error::VpnError;
use socialvpn_core::config::{
    AccountSettings, ConfigError, Credentials, IceServerSettings, Settings,
};
use socialvpn_core::engine::LinkPolicy;
use socialvpn_core::protect::SocketProtector;
use socialvpn_core::EngineConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything an engine needs; the app keeps it (the secret in the platform's keystore).
#[derive(Clone, uniffi::Record)]
pub struct VpnConfig {
    /// An app-private directory: the device key, the friends' addresses and the toggles.
    pub state_dir: String,
    /// The XMPP account, `user@domain`.
    pub jid: String,
    pub sign_in: SignIn,
    /// The XMPP resource of this device; empty picks `socialvpn-` + the device id's start.
    pub resource: String,
    /// `host:port` of the XMPP server (STARTTLS); none: found by DNS SRV records, else the
    /// JID's domain on port 5222.
    pub server: Option<String>,
    /// The network's DNS servers (Android: `LinkProperties.getDnsServers()`), used for the
    /// SRV and host look-ups; empty: the system's configuration.
    pub dns_servers: Vec<String>,
    /// A PEM file of CA certificates to trust instead of the platform's trust store (private servers).
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

/// How the account signs in; the app keeps the secret in the platform's keystore.
#[derive(Clone, uniffi::Enum)]
pub enum SignIn {
    Password {
        password: String,
    },
    /// An OAuth access token (from `oauth_password_grant` or the browser flow). A refused
    /// one ends in `VpnState::TokenRejected`: ask the user to sign in again.
    Token {
        token: String,
    },
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

impl VpnConfig {
    /// The engine configuration, checked by the core's one configuration type (errors name
    /// the field). Resolves the STUN/TURN host names (this may block on DNS: the caller is
    /// off the UI thread). `uid_hex` names the default resource.
    pub(crate) fn engine_config(
        &self,
        uid_hex: &str,
        protect: Option<SocketProtector>,
    ) -> Result<EngineConfig, VpnError> {
        self.settings(protect).check(uid_hex).map_err(|e| match e {
            ConfigError::Jid(jid) => VpnError::InvalidJid { jid },
            other => VpnError::InvalidConfig {
                reason: other.to_string(),
            },
        })
    }

    fn settings(&self, protect: Option<SocketProtector>) -> Settings {
        Settings {
            state_dir: PathBuf::from(&self.state_dir),
            subnet: self.subnet.clone(),
            listen: SocketAddr::from(([0, 0, 0, 0], self.listen_port)),
            account: Some(AccountSettings {
                jid: self.jid.clone(),
                credentials: match &self.sign_in {
                    SignIn::Password { password } => Credentials::Password(password.clone()),
                    SignIn::Token { token } => Credentials::Token(token.clone()),
                },
                resource: Some(self.resource.clone()).filter(|r| !r.is_empty()),
                server: self.server.clone(),
                dns_servers: self.dns_servers.clone(),
                ca_file: self.ca_file.as_ref().map(PathBuf::from),
            }),
            ice_servers: self
                .ice_servers
                .iter()
                .map(|s| IceServerSettings {
                    url: s.url.clone(),
                    username: s.username.clone(),
                    password: s.password.clone(),
                })
                .collect(),
            link_policy: self.link_policy.into(),
            // The app reports network changes from the platform's callbacks.
            watch_network: false,
            protect,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VpnConfig {
        VpnConfig {
            state_dir: "/tmp/x".into(),
            jid: "alice@example.org".into(),
            sign_in: SignIn::Password {
                password: "pw".into(),
            },
            resource: String::new(),
            server: None,
            dns_servers: vec![],
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
    fn the_record_maps_onto_the_core_settings() {
        // (The checks themselves are the core's: core/src/config_tests.rs.)
        let engine = config().engine_config("0123456789", None).unwrap();
        let social = engine.social.unwrap();
        assert_eq!(
            social.account.resource, "socialvpn-01234567",
            "empty = default"
        );
        assert!(social.servers.stun.is_some() && social.servers.turn.is_some());
        assert_eq!(social.policy, LinkPolicy::Proactive { max_links: 8 });
        assert!(!engine.watch_network);
        let mut c = config();
        c.subnet = "192.0.2.0/40".into();
        assert!(matches!(
            c.engine_config("00", None),
            Err(VpnError::InvalidConfig { reason }) if reason.starts_with("subnet:")
        ));
        let mut c = config();
        c.jid = "example.org".into();
        assert!(matches!(
            c.engine_config("00", None),
            Err(VpnError::InvalidJid { jid }) if jid == "example.org"
        ));
    }
}
